/*
 * udp_batch: the UDP relay's datagram path in batches (Linux).
 *
 * Why this exists. Node hands a UDP socket's datagrams to JavaScript one at a time: per datagram it
 * allocates a 64 KiB buffer, calls recvmsg a second time to hear EAGAIN, builds a Buffer and an
 * address object, and crosses into JavaScript (with the microtask and nextTick checkpoints of a
 * callback); each reply is another sendmsg. Measured under the benchmark's request/response load,
 * that is ~34 µs of CPU per reply, of which the relay's own JavaScript is under a tenth. This file
 * moves only the mechanics: the relay (sessions, policy, logging) stays in JavaScript
 * (src/proxy/udp-batch.ts), which now runs once per batch instead of once per datagram.
 *
 * What it does. A group owns one data arena (`slots` slots of `slot` bytes) and watches any number
 * of datagram sockets that Node created, bound and connected (the group borrows their descriptors;
 * Node keeps owning them and must stop its own reading first). When a watched socket is readable,
 * one recvmmsg takes what is queued into the free slots, with each datagram's socket id, length
 * and source address recorded in the `recv` table. All reads of one event-loop turn are handed to
 * JavaScript together, from a check handle that runs right after the loop's poll phase (or at once
 * when the arena is full). The callback answers by filling the `send` table (socket id, arena
 * offset, length, and a destination for unconnected sockets) and calling flush(), which sends
 * runs of addressed datagrams on one socket with a single sendmmsg and the rest with sendmsg (the
 * socket's header, the PROXY protocol v2 one, goes first in the same datagram).
 *
 * Tables are Int32Arrays shared with JavaScript (no objects per datagram):
 *   recv, RECV_STRIDE per datagram: id, offset, length or -errno, truncated (0/1), port, addr[4],
 *        scope id
 *   send, SEND_STRIDE per datagram: id, offset, length (-errno after a failed flush), port (0: the
 *        socket is connected), addr[4], scope id
 * addr is the 16-byte IPv6 address; an IPv4 peer is written IPv4-mapped (::ffff:a.b.c.d), and an
 * IPv4 socket sends to the last four bytes.
 *
 * Failures. A datagram longer than a slot is marked truncated (its length is the real one: the
 * relay drops it whole). A receive error (ECONNREFUSED after an ICMP port unreachable, say) is an
 * entry with a negative length. A send the kernel refuses at once (a full buffer: EAGAIN) is
 * dropped and reported in its entry, as UDP would lose it anyway; nothing is queued, so memory
 * stays bounded. An exception thrown by the callback goes to process 'uncaughtException'.
 *
 * Longer than the house's ~450 lines: one epoll set, its arena and the two tables are one unit of
 * ownership, and splitting them would export their internals between files.
 */
#include "addon.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <uv.h>

#define RECV_STRIDE 10
#define SEND_STRIDE 9
/* Datagrams asked for per recvmmsg call: enough to empty a busy listener in a few calls. */
#define READ_BURST 64

typedef struct group_s group_t;

typedef struct {
  uv_poll_t poll;
  group_t *group;
  int fd;
  int id;
  int family;
  /* The header sent before every datagram on this socket (PROXY v2), kept alive by a reference. */
  const char *header;
  size_t header_len;
  napi_ref header_ref;
} sock_t;

struct group_s {
  napi_env env;
  napi_ref callback;
  napi_async_context async_context;
  napi_ref arena_ref, recv_ref, send_ref;
  uv_check_t check;
  char *arena;
  size_t slot;
  int slots;
  int32_t *recv;
  int32_t *send;
  int pending;   /* datagrams recorded in recv, not yet handed over */
  sock_t **socks;
  int socks_cap;
  int open_handles; /* uv handles not yet closed */
  int delivering;   /* inside the callback: close() leaves the async context to deliver() */
  int closed;
  int collected;    /* the JavaScript external is gone: with closed and no handles, free */
  struct mmsghdr *mm;
  struct iovec *iov;     /* two per message: header, data */
  struct sockaddr_in6 *names;
};

/* ---- helpers --------------------------------------------------------------------------------- */

static group_t *group_of(napi_env env, napi_value value) {
  void *data = NULL;
  if (napi_get_value_external(env, value, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "udp_batch: not a group");
    return NULL;
  }
  group_t *g = data;
  if (g->closed) {
    napi_throw_error(env, "ERR_PACKETPONY_NATIVE", "udp_batch: group is closed");
    return NULL;
  }
  return g;
}

static void maybe_free(group_t *g) {
  if (!g->closed || g->open_handles > 0 || !g->collected) return;
  free(g->socks);
  free(g->mm);
  free(g->iov);
  free(g->names);
  free(g);
}

/* A group never closed keeps its sockets watched (and leaks); close() is the owner's job. */
static void on_collected(napi_env env, void *data, void *hint) {
  group_t *g = data;
  (void)env;
  (void)hint;
  g->collected = 1;
  maybe_free(g);
}

static void on_handle_closed(uv_handle_t *handle) {
  group_t *g = handle->data;
  if (handle != (uv_handle_t *)&g->check) free(handle); /* a sock_t: poll is its first member */
  g->open_handles--;
  maybe_free(g);
}

static void write_address(int32_t *entry, const struct sockaddr_in6 *name) {
  if (name->sin6_family == AF_INET) {
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)name;
    entry[4] = ntohs(v4->sin_port);
    entry[5] = 0;
    entry[6] = 0;
    entry[7] = (int32_t)htonl(0xffff);
    memcpy(&entry[8], &v4->sin_addr, 4);
    entry[9] = 0;
  } else {
    entry[4] = ntohs(name->sin6_port);
    memcpy(&entry[5], &name->sin6_addr, 16);
    entry[9] = (int32_t)name->sin6_scope_id;
  }
}

/* ---- receiving ------------------------------------------------------------------------------- */

static void deliver(group_t *g) {
  if (g->pending == 0) return;
  napi_env env = g->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, recv, argv[1], result;
  napi_get_reference_value(env, g->callback, &callback);
  napi_get_global(env, &recv); /* MakeCallback wants an object receiver */
  argv[0] = int_value(env, g->pending);
  /* The batch is the callback's from here: whatever it did not take is gone. */
  g->pending = 0;
  g->delivering = 1;
  napi_status status = napi_make_callback(env, g->async_context, recv, callback, 1, argv, &result);
  g->delivering = 0;
  if (g->closed) napi_async_destroy(env, g->async_context); /* closed by the callback */
  if (status == napi_pending_exception) {
    napi_value error;
    napi_get_and_clear_last_exception(env, &error);
    napi_fatal_exception(env, error);
  }
  napi_close_handle_scope(env, scope);
}

static void on_check(uv_check_t *check) {
  group_t *g = check->data;
  uv_check_stop(check);
  deliver(g);
}

static void record_error(group_t *g, sock_t *s, int err) {
  int32_t *entry = g->recv + (size_t)g->pending * RECV_STRIDE;
  memset(entry, 0, RECV_STRIDE * sizeof(int32_t));
  entry[0] = s->id;
  entry[2] = -err;
  g->pending++;
}

static void on_readable(uv_poll_t *poll, int status, int events) {
  sock_t *s = (sock_t *)poll;
  group_t *g = s->group;
  (void)events;
  if (g->pending == g->slots) deliver(g); /* full: hand over first (may unwatch s) */
  if (g->socks[s->id] != s) return;
  if (status < 0) {
    /*
     * libuv reports EPOLLERR as UV_EBADF and stops the poll. On a UDP socket that is almost
     * always an ICMP error the kernel holds for it (ECONNREFUSED: the target's port is closed):
     * take it (SO_ERROR clears it), report it, and keep reading, as Node's own path does.
     */
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
      record_error(g, s, err);
      uv_poll_start(&s->poll, UV_READABLE, on_readable);
    } else {
      /*
       * Not a socket error we can clear: polling again would only report it again (or, on a
       * descriptor that is gone, make libuv abort). Stay stopped; the relay's idle timeout ends
       * an upstream socket's session.
       */
      record_error(g, s, -status);
    }
  } else {
    int room = g->slots - g->pending;
    int want = room < READ_BURST ? room : READ_BURST;
    for (int i = 0; i < want; i++) {
      size_t slot_index = (size_t)(g->pending + i);
      g->iov[i].iov_base = g->arena + slot_index * g->slot;
      g->iov[i].iov_len = g->slot;
      memset(&g->mm[i].msg_hdr, 0, sizeof(struct msghdr));
      g->mm[i].msg_hdr.msg_iov = &g->iov[i];
      g->mm[i].msg_hdr.msg_iovlen = 1;
      g->mm[i].msg_hdr.msg_name = &g->names[i];
      g->mm[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
    }
    int n;
    do {
      /* MSG_TRUNC: a datagram longer than its slot reports its real length. */
      n = recvmmsg(s->fd, g->mm, (unsigned)want, MSG_DONTWAIT | MSG_TRUNC, NULL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) record_error(g, s, errno);
    } else {
      for (int i = 0; i < n; i++) {
        int32_t *entry = g->recv + (size_t)(g->pending + i) * RECV_STRIDE;
        entry[0] = s->id;
        entry[1] = (int32_t)((size_t)(g->pending + i) * g->slot);
        entry[2] = (int32_t)g->mm[i].msg_len;
        entry[3] = (g->mm[i].msg_hdr.msg_flags & MSG_TRUNC) != 0 || g->mm[i].msg_len > g->slot;
        write_address(entry, &g->names[i]);
      }
      g->pending += n;
    }
  }
  if (g->pending > 0 && !uv_is_active((uv_handle_t *)&g->check)) uv_check_start(&g->check, on_check);
}

/* ---- sending --------------------------------------------------------------------------------- */

static int to_name(const sock_t *s, const int32_t *entry, struct sockaddr_in6 *name) {
  memset(name, 0, sizeof(*name));
  if (s->family == AF_INET) {
    struct sockaddr_in *v4 = (struct sockaddr_in *)name;
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)entry[3]);
    memcpy(&v4->sin_addr, &entry[7], 4);
    return sizeof(struct sockaddr_in);
  }
  name->sin6_family = AF_INET6;
  name->sin6_port = htons((uint16_t)entry[3]);
  memcpy(&name->sin6_addr, &entry[4], 16);
  name->sin6_scope_id = (uint32_t)entry[8];
  return sizeof(struct sockaddr_in6);
}

/* Fills message i of the send batch for entry; 0 or an errno. */
static int prepare(group_t *g, const sock_t *s, const int32_t *entry, int i) {
  int32_t offset = entry[1], length = entry[2];
  if (offset < 0 || length < 0 || (size_t)offset + (size_t)length > g->slot * (size_t)g->slots) return EINVAL;
  struct msghdr *mh = &g->mm[i].msg_hdr;
  memset(mh, 0, sizeof(*mh));
  struct iovec *iov = &g->iov[2 * i];
  int n = 0;
  if (s->header_len > 0) {
    iov[n].iov_base = (void *)s->header;
    iov[n].iov_len = s->header_len;
    n++;
  }
  iov[n].iov_base = g->arena + offset;
  iov[n].iov_len = (size_t)length;
  n++;
  mh->msg_iov = iov;
  mh->msg_iovlen = (size_t)n;
  if (entry[3] != 0) {
    mh->msg_name = &g->names[i];
    mh->msg_namelen = (socklen_t)to_name(s, entry, &g->names[i]);
  }
  return 0;
}

/* Sends messages [0, count) of the batch on fd; marks the entries that failed. */
static int send_run(group_t *g, int fd, int32_t **entries, int count) {
  int failed = 0, done = 0;
  while (done < count) {
    int n;
    do {
      n = sendmmsg(fd, g->mm + done, (unsigned)(count - done), MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      entries[done][2] = -errno; /* this one is dropped; go on with the rest */
      failed++;
      done++;
    } else {
      done += n;
    }
  }
  return failed;
}

/* ---- exports --------------------------------------------------------------------------------- */

/* open(callback, slotBytes, slots) -> { group, arena, recv, send } */
static napi_value Open(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t slot = 0, slots = 0;
  napi_valuetype type;
  CALL(env, napi_typeof(env, argv[0], &type));
  if (argc < 3 || type != napi_function || napi_get_value_int32(env, argv[1], &slot) != napi_ok ||
      napi_get_value_int32(env, argv[2], &slots) != napi_ok || slot < 1 || slot > 65536 || slots < 1 || slots > 4096) {
    napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE", "udp_batch.open(callback, slotBytes 1..65536, slots 1..4096)");
    return NULL;
  }
  uv_loop_t *loop;
  CALL(env, napi_get_uv_event_loop(env, &loop));
  group_t *g = calloc(1, sizeof(group_t));
  if (g == NULL) {
    napi_throw_error(env, "ENOMEM", "udp_batch: out of memory");
    return NULL;
  }
  g->env = env;
  g->slot = (size_t)slot;
  g->slots = slots;
  g->mm = calloc((size_t)slots, sizeof(struct mmsghdr));
  g->iov = calloc((size_t)slots * 2, sizeof(struct iovec));
  g->names = calloc((size_t)slots, sizeof(struct sockaddr_in6));
  if (g->mm == NULL || g->iov == NULL || g->names == NULL) {
    g->closed = g->collected = 1;
    maybe_free(g);
    napi_throw_error(env, "ENOMEM", "udp_batch: out of memory");
    return NULL;
  }
  napi_value arena, recv, send, external, result, name;
  void *data;
  CALL(env, napi_create_arraybuffer(env, (size_t)slot * (size_t)slots, &data, &arena));
  g->arena = data;
  CALL(env, napi_create_arraybuffer(env, (size_t)slots * RECV_STRIDE * sizeof(int32_t), &data, &recv));
  g->recv = data;
  CALL(env, napi_create_arraybuffer(env, (size_t)slots * SEND_STRIDE * sizeof(int32_t), &data, &send));
  g->send = data;
  CALL(env, napi_create_reference(env, arena, 1, &g->arena_ref));
  CALL(env, napi_create_reference(env, recv, 1, &g->recv_ref));
  CALL(env, napi_create_reference(env, send, 1, &g->send_ref));
  CALL(env, napi_create_reference(env, argv[0], 1, &g->callback));
  CALL(env, napi_create_string_utf8(env, "PACKETPONY_UDP_BATCH", NAPI_AUTO_LENGTH, &name));
  CALL(env, napi_create_object(env, &result));
  CALL(env, napi_async_init(env, result, name, &g->async_context));
  uv_check_init(loop, &g->check);
  g->check.data = g;
  /* Never keeps the process alive by itself; the watched sockets' polls do while they run. */
  uv_unref((uv_handle_t *)&g->check);
  g->open_handles = 1;
  CALL(env, napi_create_external(env, g, on_collected, NULL, &external));
  CALL(env, napi_set_named_property(env, result, "group", external));
  CALL(env, napi_set_named_property(env, result, "arena", arena));
  CALL(env, napi_set_named_property(env, result, "recv", recv));
  CALL(env, napi_set_named_property(env, result, "send", send));
  return result;
}

/* watch(group, id, fd) -> 0 or -errno. Starts reading the socket into the group. */
static napi_value Watch(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  group_t *g = group_of(env, argv[0]);
  if (g == NULL) return NULL;
  int32_t id = -1, fd = -1;
  if (argc < 3 || napi_get_value_int32(env, argv[1], &id) != napi_ok || napi_get_value_int32(env, argv[2], &fd) != napi_ok ||
      id < 0 || fd < 0) {
    napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE", "udp_batch.watch(group, id >= 0, fd >= 0)");
    return NULL;
  }
  if (id >= g->socks_cap) {
    int cap = g->socks_cap == 0 ? 64 : g->socks_cap;
    while (cap <= id) cap *= 2;
    sock_t **grown = realloc(g->socks, (size_t)cap * sizeof(sock_t *));
    if (grown == NULL) return int_value(env, -ENOMEM);
    memset(grown + g->socks_cap, 0, (size_t)(cap - g->socks_cap) * sizeof(sock_t *));
    g->socks = grown;
    g->socks_cap = cap;
  }
  if (g->socks[id] != NULL) return int_value(env, -EEXIST);
  struct sockaddr_in6 local;
  socklen_t len = sizeof(local);
  if (getsockname(fd, (struct sockaddr *)&local, &len) != 0) return int_value(env, -errno);
  if (local.sin6_family != AF_INET && local.sin6_family != AF_INET6) return int_value(env, -EAFNOSUPPORT);
  sock_t *s = calloc(1, sizeof(sock_t));
  if (s == NULL) return int_value(env, -ENOMEM);
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  int err = uv_poll_init_socket(loop, &s->poll, fd);
  if (err != 0) {
    free(s);
    return int_value(env, err);
  }
  s->poll.data = g;
  s->group = g;
  s->fd = fd;
  s->id = id;
  s->family = local.sin6_family;
  g->open_handles++;
  err = uv_poll_start(&s->poll, UV_READABLE, on_readable);
  if (err != 0) {
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
    return int_value(env, err);
  }
  g->socks[id] = s;
  return int_value(env, 0);
}

static void drop_socket(group_t *g, sock_t *s) {
  g->socks[s->id] = NULL;
  if (s->header_ref != NULL) napi_delete_reference(g->env, s->header_ref);
  s->header_ref = NULL;
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, on_handle_closed);
}

/*
 * The watched socket that (argv[0], argv[1]) = (group, id) name, or NULL: none by that id, or
 * *g NULL too when argv[0] is not an open group (an exception is then pending).
 */
static sock_t *socket_arg(napi_env env, napi_value *argv, group_t **g) {
  *g = group_of(env, argv[0]);
  if (*g == NULL) return NULL;
  int32_t id = -1;
  napi_get_value_int32(env, argv[1], &id);
  return id >= 0 && id < (*g)->socks_cap ? (*g)->socks[id] : NULL;
}

/* unwatch(group, id): stops reading the socket; the descriptor stays Node's. Call before closing it. */
static napi_value Unwatch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  group_t *g;
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  sock_t *s = socket_arg(env, argv, &g);
  if (s != NULL) drop_socket(g, s);
  return NULL;
}

/* pause(group, id): stops reading the socket but keeps it for sends (a listener handing over). */
static napi_value Pause(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  group_t *g;
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  sock_t *s = socket_arg(env, argv, &g);
  if (s != NULL) uv_poll_stop(&s->poll);
  return NULL;
}

/* header(group, id, buffer | null): what goes before every datagram sent on the socket. */
static napi_value Header(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  group_t *g;
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  sock_t *s = socket_arg(env, argv, &g);
  if (g == NULL) return NULL;
  if (s == NULL) return int_value(env, -EBADF);
  if (s->header_ref != NULL) napi_delete_reference(env, s->header_ref);
  s->header_ref = NULL;
  s->header = NULL;
  s->header_len = 0;
  bool is_buffer = false;
  if (argc >= 3 && napi_is_buffer(env, argv[2], &is_buffer) == napi_ok && is_buffer) {
    void *data;
    size_t len;
    CALL(env, napi_get_buffer_info(env, argv[2], &data, &len));
    if (len > 0) {
      CALL(env, napi_create_reference(env, argv[2], 1, &s->header_ref));
      s->header = data;
      s->header_len = len;
    }
  }
  return int_value(env, 0);
}

/* flush(group, count) -> entries that failed (their length is then -errno). */
static napi_value Flush(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  group_t *g = group_of(env, argv[0]);
  if (g == NULL) return NULL;
  int32_t count = 0;
  napi_get_value_int32(env, argv[1], &count);
  if (count < 0 || count > g->slots) {
    napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE", "udp_batch.flush: count out of range");
    return NULL;
  }
  /* Runs of addressed datagrams on one socket go out in one sendmmsg; connected sends one by one. */
  int32_t *run_entries[READ_BURST];
  int run = 0, run_fd = -1, failed = 0;
  for (int32_t i = 0; i < count; i++) {
    int32_t *entry = g->send + (size_t)i * SEND_STRIDE;
    int32_t id = entry[0];
    sock_t *s = id >= 0 && id < g->socks_cap ? g->socks[id] : NULL;
    if (run > 0 && (s == NULL || entry[3] == 0 || s->fd != run_fd || run == READ_BURST)) {
      failed += send_run(g, run_fd, run_entries, run);
      run = 0;
    }
    if (s == NULL) {
      entry[2] = -EBADF;
      failed++;
      continue;
    }
    int err = prepare(g, s, entry, run);
    if (err != 0) {
      entry[2] = -err;
      failed++;
      continue;
    }
    if (entry[3] != 0) {
      run_fd = s->fd;
      run_entries[run++] = entry;
      continue;
    }
    ssize_t n;
    do {
      n = sendmsg(s->fd, &g->mm[run].msg_hdr, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      entry[2] = -errno;
      failed++;
    }
  }
  if (run > 0) failed += send_run(g, run_fd, run_entries, run);
  return int_value(env, failed);
}

/* close(group): stops every watch; the arena stays valid for views still held. */
static napi_value Close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  group_t *g = group_of(env, argv[0]);
  if (g == NULL) return NULL;
  for (int i = 0; i < g->socks_cap; i++) {
    if (g->socks[i] != NULL) drop_socket(g, g->socks[i]);
  }
  g->closed = 1;
  g->pending = 0;
  napi_delete_reference(env, g->callback);
  napi_delete_reference(env, g->arena_ref);
  napi_delete_reference(env, g->recv_ref);
  napi_delete_reference(env, g->send_ref);
  if (!g->delivering) napi_async_destroy(env, g->async_context);
  uv_close((uv_handle_t *)&g->check, on_handle_closed);
  return NULL;
}

/* open, watch, unwatch, pause, header, flush, close, and the table strides, on `exports`. */
napi_status udp_batch_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"open", NULL, Open, NULL, NULL, NULL, napi_enumerable, NULL},
    {"watch", NULL, Watch, NULL, NULL, NULL, napi_enumerable, NULL},
    {"unwatch", NULL, Unwatch, NULL, NULL, NULL, napi_enumerable, NULL},
    {"pause", NULL, Pause, NULL, NULL, NULL, napi_enumerable, NULL},
    {"header", NULL, Header, NULL, NULL, NULL, napi_enumerable, NULL},
    {"flush", NULL, Flush, NULL, NULL, NULL, napi_enumerable, NULL},
    {"close", NULL, Close, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_value constants;
  napi_status status = napi_create_object(env, &constants);
  if (status != napi_ok) return status;
  napi_set_named_property(env, constants, "RECV_STRIDE", int_value(env, RECV_STRIDE));
  napi_set_named_property(env, constants, "SEND_STRIDE", int_value(env, SEND_STRIDE));
  status = napi_set_named_property(env, exports, "constants", constants);
  if (status != napi_ok) return status;
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}
