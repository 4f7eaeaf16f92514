/*
 * AF_UNIX datagram sockets, which Node does not have: the local syslog socket (/dev/log,
 * src/telemetry/sinks/syslog-unix.ts) and systemd's notify socket (src/supervisor/sd-notify.ts);
 * the tests bind receivers with them too. src/native/unix-dgram.ts wraps them.
 *
 * Sockets are plain descriptors owned by JavaScript (non-blocking, close-on-exec); every call
 * returns 0 or a count on success and -errno on failure, never throws for a system call's error.
 * A path starting with '@' names a Linux abstract socket (NOTIFY_SOCKET may be one): the '@'
 * becomes sun_path's leading NUL and the address length covers exactly the name, as systemd and
 * sd_notify(3) do. Readiness comes from a uv_poll_t on the descriptor (unixPoll), so waiting for a
 * full receiver's queue to drain, or for a datagram, costs nothing while nothing happens.
 */
#include "addon.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

/* The longest path or abstract name sun_path holds: a path needs its NUL, a name its leading one. */
#define PATH_MAX_BYTES (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

/*
 * Fills `addr` from a JavaScript string; returns the address length, or -errno (ENAMETOOLONG for
 * a path sun_path cannot hold, EINVAL for an empty one or one with a NUL inside).
 */
static int unix_address(napi_env env, napi_value value, struct sockaddr_un *addr) {
  char text[PATH_MAX_BYTES + 2]; /* '@' and a name of the longest length, and the NUL */
  size_t length = 0, copied = 0;
  /* The whole length first: a copy into text stops at its size without saying it was cut. */
  if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok) return -EINVAL;
  if (length > PATH_MAX_BYTES + 1) return -ENAMETOOLONG;
  if (napi_get_value_string_utf8(env, value, text, sizeof(text), &copied) != napi_ok || copied != length) return -EINVAL;
  if (length == 0 || strlen(text) != length) return -EINVAL;
  memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (text[0] == '@') {
    size_t name = length - 1;
    if (name > PATH_MAX_BYTES) return -ENAMETOOLONG;
    memcpy(addr->sun_path + 1, text + 1, name); /* sun_path[0] stays NUL: abstract */
    return (int)(offsetof(struct sockaddr_un, sun_path) + 1 + name);
  }
  if (length > PATH_MAX_BYTES) return -ENAMETOOLONG;
  memcpy(addr->sun_path, text, length);
  return (int)(offsetof(struct sockaddr_un, sun_path) + length + 1);
}

/* A descriptor argument, or -1 when it is not one. */
static int32_t fd_of(napi_env env, napi_value value) {
  int32_t fd = -1;
  if (napi_get_value_int32(env, value, &fd) != napi_ok) return -1;
  return fd < 0 ? -1 : fd;
}

/* unixOpen() -> a new descriptor, or -errno (EMFILE, say). */
static napi_value Open(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return int_value(env, fd >= 0 ? fd : -errno);
}

/* Shared by unixConnect and unixBind: (fd, path) -> 0 or -errno. */
static napi_value with_address(napi_env env, napi_callback_info info, int bind_it) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return int_value(env, -EINVAL);
  int32_t fd = fd_of(env, argv[0]);
  if (fd < 0) return int_value(env, -EBADF);
  struct sockaddr_un addr;
  int length = unix_address(env, argv[1], &addr);
  if (length < 0) return int_value(env, length);
  int result;
  if (bind_it) {
    result = bind(fd, (struct sockaddr *)&addr, (socklen_t)length);
  } else {
    do result = connect(fd, (struct sockaddr *)&addr, (socklen_t)length);
    while (result < 0 && errno == EINTR);
  }
  return int_value(env, result == 0 ? 0 : -errno);
}

/*
 * unixConnect(fd, path) -> 0 or -errno. A connected datagram socket learns when its reader is
 * gone (ECONNREFUSED on send) and gets EAGAIN when the reader's queue is full, instead of losing
 * datagrams silently.
 */
static napi_value Connect(napi_env env, napi_callback_info info) {
  return with_address(env, info, 0);
}

/* unixBind(fd, path) -> 0 or -errno: a receiver at `path` (the file is left for the caller). */
static napi_value Bind(napi_env env, napi_callback_info info) {
  return with_address(env, info, 1);
}

/*
 * unixSend(fd, buffer, path) -> the bytes sent (a datagram goes whole or not at all), or -errno:
 * -EAGAIN when the receiver's queue is full (unixPoll reports when to try again). With path null
 * or undefined the socket must be connected; otherwise the datagram goes to path (sendto).
 * MSG_NOSIGNAL: never SIGPIPE.
 */
static napi_value Send(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  void *data = NULL;
  size_t length = 0;
  napi_valuetype type = napi_undefined;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_buffer_info(env, argv[1], &data, &length) != napi_ok) {
    return int_value(env, -EINVAL);
  }
  int32_t fd = fd_of(env, argv[0]);
  if (fd < 0) return int_value(env, -EBADF);
  if (argc >= 3 && napi_typeof(env, argv[2], &type) != napi_ok) return int_value(env, -EINVAL);
  struct sockaddr_un addr;
  int addr_length = 0;
  if (type != napi_undefined && type != napi_null) {
    addr_length = unix_address(env, argv[2], &addr);
    if (addr_length < 0) return int_value(env, addr_length);
  }
  ssize_t sent;
  do {
    sent = addr_length > 0 ? sendto(fd, data, length, MSG_NOSIGNAL, (struct sockaddr *)&addr, (socklen_t)addr_length)
                           : send(fd, data, length, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent >= 0) return int_value(env, (int32_t)sent);
  return int_value(env, errno == EWOULDBLOCK ? -EAGAIN : -errno);
}

/*
 * unixReceive(fd, buffer) -> the length of the next datagram (its bytes in buffer, cut at the
 * buffer's length: MSG_TRUNC makes the return value the real length, so a caller can tell), or
 * -errno, -EAGAIN when none is waiting.
 */
static napi_value Receive(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  void *data = NULL;
  size_t length = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_buffer_info(env, argv[1], &data, &length) != napi_ok) {
    return int_value(env, -EINVAL);
  }
  int32_t fd = fd_of(env, argv[0]);
  if (fd < 0) return int_value(env, -EBADF);
  ssize_t received;
  do received = recv(fd, data, length, MSG_TRUNC);
  while (received < 0 && errno == EINTR);
  if (received >= 0) return int_value(env, (int32_t)received);
  return int_value(env, errno == EWOULDBLOCK ? -EAGAIN : -errno);
}

/* unixClose(fd) -> 0 or -errno. Stop its unixPoll first: libuv must not watch a closed number. */
static napi_value Close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return int_value(env, -EINVAL);
  int32_t fd = fd_of(env, argv[0]);
  if (fd < 0) return int_value(env, -EBADF);
  /* Linux frees the descriptor even when close reports EINTR: never retry. */
  return int_value(env, close(fd) == 0 ? 0 : -errno);
}

/* ---- readiness ------------------------------------------------------------------------------- */

typedef struct {
  uv_poll_t poll; /* first: the handle's address is the watch's */
  napi_env env;
  napi_ref callback;
  napi_async_context async_context;
  int closing;
} watch_t;

static void on_watch_closed(uv_handle_t *handle) {
  watch_t *w = (watch_t *)handle;
  napi_delete_reference(w->env, w->callback);
  napi_async_destroy(w->env, w->async_context);
  free(w);
}

static void on_unused_watch_closed(uv_handle_t *handle) {
  free(handle);
}

static void on_poll(uv_poll_t *poll, int status, int events) {
  watch_t *w = (watch_t *)poll;
  if (w->closing) return;
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, recv, argv[2], result;
  napi_get_reference_value(env, w->callback, &callback);
  napi_get_global(env, &recv); /* MakeCallback wants an object receiver */
  argv[0] = int_value(env, (events & UV_READABLE ? 1 : 0) | (events & UV_WRITABLE ? 2 : 0));
  argv[1] = int_value(env, status); /* libuv's errors are -errno on Linux */
  /* The callback may close the watch: w stays valid until on_watch_closed, a later loop phase. */
  if (napi_make_callback(env, w->async_context, recv, callback, 2, argv, &result) == napi_pending_exception) {
    napi_value error;
    napi_get_and_clear_last_exception(env, &error);
    napi_fatal_exception(env, error);
  }
  napi_close_handle_scope(env, scope);
}

static watch_t *watch_of(napi_env env, napi_value value) {
  void *data = NULL;
  if (napi_get_value_external(env, value, &data) != napi_ok || data == NULL) return NULL;
  watch_t *w = data;
  return w->closing ? NULL : w;
}

/*
 * unixPoll(fd, callback) -> a watch (an external), not watching anything yet: unixPollEvents
 * chooses what. callback(events, status): events 1 readable, 2 writable (both: 3); status 0 or
 * -errno. One watch per descriptor (libuv's rule).
 */
static napi_value Poll(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], name, external;
  napi_valuetype type;
  uv_loop_t *loop = NULL;
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd = argc >= 1 ? fd_of(env, argv[0]) : -1;
  if (fd < 0 || argc < 2 || napi_typeof(env, argv[1], &type) != napi_ok || type != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "unixPoll(fd, callback)");
    return NULL;
  }
  CALL(env, napi_get_uv_event_loop(env, &loop));
  watch_t *w = calloc(1, sizeof(*w));
  if (w == NULL) {
    napi_throw_error(env, "ERR_PACKETPONY_NATIVE", "unix_dgram: out of memory");
    return NULL;
  }
  int err = uv_poll_init(loop, &w->poll, fd);
  if (err != 0) {
    free(w);
    napi_throw_error(env, "ERR_PACKETPONY_NATIVE", uv_strerror(err));
    return NULL;
  }
  w->env = env;
  if (napi_create_string_utf8(env, "PacketPonyUnixDatagram", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_reference(env, argv[1], 1, &w->callback) != napi_ok ||
      napi_async_init(env, NULL, name, &w->async_context) != napi_ok ||
      napi_create_external(env, w, NULL, NULL, &external) != napi_ok) {
    /* Only a broken environment fails here; the handle must still be closed through libuv. */
    w->closing = 1;
    uv_close((uv_handle_t *)&w->poll, on_unused_watch_closed);
    napi_throw_error(env, "ERR_PACKETPONY_NATIVE", "unix_dgram: cannot create the watch");
    return NULL;
  }
  return external;
}

/* unixPollEvents(watch, events) -> 0 or -errno: watch for 1 readable, 2 writable, 3 both, 0 none. */
static napi_value PollEvents(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t events = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[1], &events) != napi_ok || events < 0 || events > 3) {
    return int_value(env, -EINVAL);
  }
  watch_t *w = watch_of(env, argv[0]);
  if (w == NULL) return int_value(env, -EBADF);
  if (events == 0) return int_value(env, uv_poll_stop(&w->poll));
  return int_value(env, uv_poll_start(&w->poll, (events & 1 ? UV_READABLE : 0) | (events & 2 ? UV_WRITABLE : 0), on_poll));
}

/* unixPollClose(watch): the watch ends (no callback after this) and is freed once libuv lets go. */
static napi_value PollClose(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return NULL;
  watch_t *w = watch_of(env, argv[0]);
  if (w == NULL) return NULL;
  w->closing = 1;
  uv_close((uv_handle_t *)&w->poll, on_watch_closed);
  return NULL;
}

napi_status unix_dgram_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"unixOpen", NULL, Open, NULL, NULL, NULL, napi_enumerable, NULL},
    {"unixConnect", NULL, Connect, NULL, NULL, NULL, napi_enumerable, NULL},
    {"unixBind", NULL, Bind, NULL, NULL, NULL, napi_enumerable, NULL},
    {"unixSend", NULL, Send, NULL, NULL, NULL, napi_enumerable, NULL},
    {"unixReceive", NULL, Receive, NULL, NULL, NULL, napi_enumerable, NULL},
    {"unixClose", NULL, Close, NULL, NULL, NULL, napi_enumerable, NULL},
    {"unixPoll", NULL, Poll, NULL, NULL, NULL, napi_enumerable, NULL},
    {"unixPollEvents", NULL, PollEvents, NULL, NULL, NULL, napi_enumerable, NULL},
    {"unixPollClose", NULL, PollClose, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}
