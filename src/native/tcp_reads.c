/*
 * tcp_reads: the TCP relay's reads in batches (Linux).
 *
 * Why this exists. Node hands each read of a TCP socket to JavaScript on its own: libuv's read
 * callback, then node's stream listener, then a call into JavaScript with its callback scope (async
 * hooks, trace events, the nextTick and microtask checkpoints). Counted under the benchmark's HTTP
 * keep-alive load, that crossing is about a fifth of the child's CPU, more than the relay's own
 * JavaScript. This file moves only the read: the relay (metering, counting, writing, its state)
 * stays in JavaScript (src/proxy/tcp-reads.ts, src/proxy/relay-flow.ts), which is now called once
 * per batch of reads instead of once per read.
 *
 * What it does. One epoll set per process (the relay runs on the main thread; another thread that
 * tries gets an error, not a second set) holds the sockets being read; libuv polls that set's
 * descriptor like any other (one uv_poll_t), so the loop wakes when any of them is readable. Then
 * each ready socket is read once into the buffer JavaScript gave for it, each result recorded in a
 * shared table (slot id, bytes or a negative errno; UV_EOF for the end of stream), and JavaScript
 * is called once with the count. A socket whose read filled its buffer is read again after that
 * call, as libuv does (up to READ_ROUNDS rounds), so a bulk transfer does not wait a loop turn per
 * buffer.
 *
 * Ownership. libuv keeps owning every socket (node's TCP handle: writes, shutdown, close); this
 * only borrows the descriptor for reading, while JavaScript says it is open: the slot is forgotten
 * as the handle closes (the close itself takes the socket out of the set). A slot's buffer is held
 * by a reference until it is replaced or forgotten, so a read never lands in freed memory.
 *
 * Pausing is lazy, as libuv's is: stop() only marks the slot; the socket leaves the epoll set (one
 * epoll_ctl) when it turns out readable while paused, and comes back on the next start. A pause
 * that ends before data comes costs no system call. After an end of stream or a read error the
 * socket leaves the set at once: level-triggered, it would be ready again every turn.
 */
#include "addon.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

/* Reads per socket in one loop turn while each fills its buffer (libuv's uv__read makes 32). */
#define READ_ROUNDS 32
/* libuv's end of stream status, what node's stream reads report. */
#define STATUS_EOF (-4095)

enum { SLOT_FREE, SLOT_READING, SLOT_PAUSED, SLOT_OUT_OF_SET };

typedef struct {
  int fd;
  int state;
  char *buf;
  size_t len;
  napi_ref buf_ref;
} slot_t;

typedef struct {
  napi_env env;
  napi_ref callback;
  napi_async_context async_context;
  uv_poll_t poll;
  int epfd;
  slot_t *slots;
  int nslots;
  int32_t *table; /* 2 per entry: slot id, result */
  int capacity;
  struct epoll_event *events;
  int32_t *again; /* slot ids whose read filled the buffer */
} reader_t;

static reader_t *reader = NULL;

/* ---- helpers --------------------------------------------------------------------------------- */

static reader_t *reader_for(napi_env env) {
  if (reader == NULL || reader->env != env) {
    napi_throw_error(env, "ERR_PACKETPONY_NATIVE", "tcp_reads: not opened in this thread");
    return NULL;
  }
  return reader;
}

/*
 * The slot named by a call's first argument (the call's other arguments, up to `more`, in
 * `rest`), or NULL with an exception pending.
 */
static slot_t *slot_call(napi_env env, napi_callback_info info, size_t more, napi_value *rest) {
  size_t argc = 1 + more;
  napi_value argv[2];
  int32_t id = -1;
  if (reader_for(env) == NULL) return NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 + more ||
      napi_get_value_int32(env, argv[0], &id) != napi_ok || id < 0 || id >= reader->nslots ||
      reader->slots[id].state == SLOT_FREE) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "tcp_reads: no such slot");
    return NULL;
  }
  if (more > 0) *rest = argv[1];
  return &reader->slots[id];
}

/* Points the slot at a new buffer (a Uint8Array), holding it; the old one is let go. */
static int set_buffer(napi_env env, slot_t *s, napi_value buffer) {
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  napi_ref ref;
  if (napi_get_typedarray_info(env, buffer, &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_uint8_array || length == 0 || napi_create_reference(env, buffer, 1, &ref) != napi_ok) {
    return -EINVAL;
  }
  if (s->buf_ref != NULL) napi_delete_reference(env, s->buf_ref);
  s->buf_ref = ref;
  s->buf = data;
  s->len = length;
  return 0;
}

static int join_set(int fd, int id) {
  struct epoll_event ev;
  ev.events = EPOLLIN;
  ev.data.u64 = 0;
  ev.data.u32 = (uint32_t)id;
  return epoll_ctl(reader->epfd, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : -errno;
}

/*
 * Takes the socket out of the set (not just its interest: epoll reports a hang-up or an error
 * whatever the interest, and level-triggered it would wake us every turn until the socket closes).
 */
static void leave_set(slot_t *s) {
  epoll_ctl(reader->epfd, EPOLL_CTL_DEL, s->fd, NULL);
  s->state = SLOT_OUT_OF_SET;
}

/* ---- reading --------------------------------------------------------------------------------- */

/* One read of slot `id` into its buffer; returns the result to record, or 0 for nothing. */
static int32_t read_slot(int id, uint32_t events) {
  slot_t *s = &reader->slots[id];
  if (s->state == SLOT_PAUSED) {
    /* Paused and readable: now the socket leaves the set, so that it stops waking us. */
    leave_set(s);
    return 0;
  }
  if (s->state != SLOT_READING) return 0;
  ssize_t n;
  do n = read(s->fd, s->buf, s->len);
  while (n < 0 && errno == EINTR);
  int32_t result;
  if (n > 0) return (int32_t)n;
  if (n == 0) {
    result = STATUS_EOF;
  } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
    if (!(events & (EPOLLERR | EPOLLHUP))) return 0;
    /* An error or hang-up with nothing to read: take it from the socket, or the set would wake
     * us forever. */
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    result = err == 0 ? STATUS_EOF : -err;
  } else {
    result = -errno;
  }
  /* Nothing more will be read: out of the set now rather than on the next wake. */
  leave_set(s);
  return result;
}

static void deliver(int count) {
  napi_env env = reader->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, recv, argv[1], result;
  napi_get_reference_value(env, reader->callback, &callback);
  napi_get_global(env, &recv); /* MakeCallback wants an object receiver */
  argv[0] = int_value(env, count);
  napi_status status = napi_make_callback(env, reader->async_context, recv, callback, 1, argv, &result);
  if (status == napi_pending_exception) {
    napi_value error;
    napi_get_and_clear_last_exception(env, &error);
    napi_fatal_exception(env, error);
  }
  napi_close_handle_scope(env, scope);
}

/* Reads slot `id` once and records the result in the table; a full buffer goes on `again`. */
static void read_and_record(int id, uint32_t events, int *count, int *again) {
  int32_t result = read_slot(id, events);
  if (result == 0) return;
  reader->table[2 * *count] = id;
  reader->table[2 * *count + 1] = result;
  (*count)++;
  if (result > 0 && (size_t)result == reader->slots[id].len) reader->again[(*again)++] = id;
}

static void on_ready(uv_poll_t *poll, int status, int events) {
  (void)poll;
  (void)status;
  (void)events;
  int ready;
  do ready = epoll_wait(reader->epfd, reader->events, reader->capacity, 0);
  while (ready < 0 && errno == EINTR);
  int count = 0, again = 0;
  for (int i = 0; i < ready; i++) {
    int id = (int)reader->events[i].data.u32;
    if (id < reader->nslots) read_and_record(id, reader->events[i].events, &count, &again);
  }
  /* The slots of `again` may be forgotten, paused or re-pointed by the callback; read_slot sees. */
  for (int round = 1; count > 0; round++) {
    deliver(count);
    if (again == 0 || round == READ_ROUNDS) break;
    int ids = again;
    count = again = 0;
    /* In place: entry i adds at most one, at an index no higher than i. */
    for (int i = 0; i < ids; i++) read_and_record(reader->again[i], 0, &count, &again);
  }
}

/* ---- the exports ----------------------------------------------------------------------------- */

/*
 * tcpReadsOpen(onBatch, capacity) -> the table, an ArrayBuffer of 2 × capacity int32s. Once per
 * process (the set lives as long as the process; its poll handle does not keep the loop alive).
 * onBatch(count) finds count entries (slot id, bytes read or negative status) at the table's start.
 */
static napi_value Open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], table;
  int32_t capacity = 0;
  napi_valuetype type;
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || napi_typeof(env, argv[0], &type) != napi_ok || type != napi_function ||
      napi_get_value_int32(env, argv[1], &capacity) != napi_ok || capacity < 1 || capacity > 65536) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "tcpReadsOpen(onBatch, capacity 1..65536)");
    return NULL;
  }
  if (reader != NULL) {
    napi_throw_error(env, "ERR_PACKETPONY_NATIVE", "tcp_reads: already open");
    return NULL;
  }
  reader_t *r = calloc(1, sizeof(*r));
  void *data = NULL;
  uv_loop_t *loop = NULL;
  napi_value name;
  int ok = r != NULL, err = ENOMEM;
  if (ok) {
    r->env = env;
    r->capacity = capacity;
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (r->epfd < 0) err = errno;
    r->events = calloc((size_t)capacity, sizeof(*r->events));
    r->again = calloc((size_t)capacity, sizeof(*r->again));
    ok = r->epfd >= 0 && r->events != NULL && r->again != NULL &&
         napi_create_arraybuffer(env, (size_t)capacity * 2 * sizeof(int32_t), &data, &table) == napi_ok &&
         napi_create_string_utf8(env, "PacketPonyTcpReads", NAPI_AUTO_LENGTH, &name) == napi_ok &&
         napi_get_uv_event_loop(env, &loop) == napi_ok && uv_poll_init(loop, &r->poll, r->epfd) == 0;
  }
  if (!ok) {
    /* EMFILE at epoll_create1, say: the caller reads through Node instead. */
    if (r != NULL) {
      if (r->epfd >= 0) close(r->epfd);
      free(r->events);
      free(r->again);
      free(r);
    }
    napi_throw_error(env, "ERR_PACKETPONY_NATIVE", err == ENOMEM ? "tcp_reads: out of memory" : strerror(err));
    return NULL;
  }
  /* From here nothing fails but the N-API calls of a healthy environment. */
  napi_create_reference(env, argv[0], 1, &r->callback);
  napi_async_init(env, NULL, name, &r->async_context);
  uv_poll_start(&r->poll, UV_READABLE, on_ready);
  uv_unref((uv_handle_t *)&r->poll);
  r->table = data;
  reader = r;
  return table;
}

/*
 * tcpReadStart(id, fd, buffer) -> 0 or -errno. Reads socket `fd` for slot `id` (JavaScript numbers
 * its slots from 0, densely) into `buffer` (a Uint8Array; null keeps the slot's current one). On a
 * slot that is reading or paused: resumes it, and fd must be the same.
 */
static napi_value Start(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t id = -1, fd = -1;
  napi_valuetype type;
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (reader_for(env) == NULL) return NULL;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &id) != napi_ok || id < 0 || id > 16 * 1024 * 1024 ||
      napi_get_value_int32(env, argv[1], &fd) != napi_ok || fd < 0 || napi_typeof(env, argv[2], &type) != napi_ok) {
    return int_value(env, -EINVAL);
  }
  if (id >= reader->nslots) {
    int n = reader->nslots == 0 ? 64 : reader->nslots;
    while (n <= id) n *= 2;
    slot_t *grown = realloc(reader->slots, (size_t)n * sizeof(*grown));
    if (grown == NULL) return int_value(env, -ENOMEM);
    memset(grown + reader->nslots, 0, (size_t)(n - reader->nslots) * sizeof(*grown));
    reader->slots = grown;
    reader->nslots = n;
  }
  slot_t *s = &reader->slots[id];
  if (s->state != SLOT_FREE && s->fd != fd) return int_value(env, -EBADF);
  if (type != napi_null && type != napi_undefined) {
    int err = set_buffer(env, s, argv[2]);
    if (err != 0) return int_value(env, err);
  }
  if (s->buf == NULL) return int_value(env, -EINVAL);
  int err = s->state == SLOT_FREE || s->state == SLOT_OUT_OF_SET ? join_set(fd, id) : 0;
  if (err != 0) {
    /* A slot that never read lets its new buffer go again; a paused one keeps it. */
    if (s->state == SLOT_FREE && s->buf_ref != NULL) {
      napi_delete_reference(env, s->buf_ref);
      s->buf_ref = NULL;
      s->buf = NULL;
    }
    return int_value(env, err);
  }
  s->fd = fd;
  s->state = SLOT_READING;
  return int_value(env, 0);
}

/* tcpReadStop(id): no more reads for the slot until tcpReadStart (lazily: see the header). */
static napi_value Stop(napi_env env, napi_callback_info info) {
  slot_t *s = slot_call(env, info, 0, NULL);
  if (s != NULL && s->state == SLOT_READING) s->state = SLOT_PAUSED;
  return NULL;
}

/* tcpReadInto(id, buffer): the slot's next reads go to `buffer`. */
static napi_value Into(napi_env env, napi_callback_info info) {
  napi_value buffer;
  slot_t *s = slot_call(env, info, 1, &buffer);
  if (s == NULL) return NULL;
  if (set_buffer(env, s, buffer) != 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "tcpReadInto(id, a non-empty Uint8Array)");
  }
  return NULL;
}

/*
 * tcpReadForget(id, closed): the slot is free and its buffer let go. `closed`: the socket's
 * descriptor has just been closed, which took it out of the set (closing the last descriptor of a
 * socket does): no system call. Otherwise it leaves the set now, so call this while the
 * descriptor is still open (its number may go to another socket once closed).
 */
static napi_value Forget(napi_env env, napi_callback_info info) {
  napi_value closed_arg;
  bool closed = false;
  slot_t *s = slot_call(env, info, 1, &closed_arg);
  if (s == NULL) return NULL;
  napi_get_value_bool(env, closed_arg, &closed);
  if (!closed && s->state != SLOT_OUT_OF_SET) epoll_ctl(reader->epfd, EPOLL_CTL_DEL, s->fd, NULL);
  if (s->buf_ref != NULL) napi_delete_reference(env, s->buf_ref);
  memset(s, 0, sizeof(*s));
  s->state = SLOT_FREE;
  return NULL;
}

napi_status tcp_reads_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"tcpReadsOpen", NULL, Open, NULL, NULL, NULL, napi_enumerable, NULL},
    {"tcpReadStart", NULL, Start, NULL, NULL, NULL, napi_enumerable, NULL},
    {"tcpReadStop", NULL, Stop, NULL, NULL, NULL, napi_enumerable, NULL},
    {"tcpReadInto", NULL, Into, NULL, NULL, NULL, napi_enumerable, NULL},
    {"tcpReadForget", NULL, Forget, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}
