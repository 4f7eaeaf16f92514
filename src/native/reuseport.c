/*
 * A listener served by several workers (`workers:` in its file; src/supervisor/listener-group.ts):
 * one SO_REUSEPORT socket per worker, in one reuseport group, and what the group needs from C.
 *
 * - listenSocket(fd, backlog): the supervisor makes each TCP socket listen itself, in worker order,
 *   because a TCP socket joins its reuseport group when it starts listening and the group's index
 *   of a socket is its join order (UDP sockets join at bind, which the supervisor also does in
 *   order). The child's later listen({ fd }) on a listening socket only sets the backlog again.
 * - steerBySource(fd, workers): a classic BPF program for the group (SO_ATTACH_REUSEPORT_CBPF)
 *   that picks the socket from the client's source address alone, so that every connection and
 *   datagram of one address reaches the same worker, and that worker's limiter sees all of the
 *   address's connections, attempts and bytes: per-address limits stay exact with no state shared
 *   between processes. The kernel's own choice hashes the whole 4-tuple, which spreads one
 *   address over every worker. The hash (mirrored in src/platform/reuseport.ts): the IPv4 address,
 *   or the XOR of an IPv6 address's four words, times 2654435761 (Knuth's multiplicative hash,
 *   mod 2^32), its high 16 bits, modulo the worker count. An index past the group's end (a socket
 *   closed early) makes the kernel fall back to its own hash, so nothing is ever dropped.
 * - The listener's total: max_total_connections counted in one page of shared memory (memfd) that
 *   every worker maps: a compare-and-swap on the total admits a connection only under the cap, so
 *   the cap is exact across workers without a message per connection. Each process also counts
 *   what it holds in a slot of its own, so that when one dies the supervisor takes exactly its
 *   connections off the total (counterReclaim). Between a worker's two atomic steps (total, then
 *   slot) a SIGKILL could leave the total one too high; nothing else can (JavaScript cannot run
 *   between them).
 */
#include "addon.h"

#include <errno.h>
#include <linux/filter.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

/* The arguments (fd, count) of listenSocket and steerBySource: 1 when fd >= 0 and count >= 1. */
static int fd_and_count(napi_env env, napi_callback_info info, int32_t *fd, int32_t *count) {
  size_t argc = 2;
  napi_value argv[2];
  return napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= 2 &&
         napi_get_value_int32(env, argv[0], fd) == napi_ok && napi_get_value_int32(env, argv[1], count) == napi_ok &&
         *fd >= 0 && *count >= 1;
}

/* listenSocket(fd, backlog) -> 0 or -errno. */
static napi_value ListenSocket(napi_env env, napi_callback_info info) {
  int32_t fd = -1, backlog = 0;
  if (!fd_and_count(env, info, &fd, &backlog)) return int_value(env, -EINVAL);
  return int_value(env, listen(fd, backlog) == 0 ? 0 : -errno);
}

/*
 * allowReuseport(fd) -> 0 or -errno. A listener that grows from one worker by a reload: its socket
 * was bound without SO_REUSEPORT (so that a second daemon by mistake fails with EADDRINUSE instead
 * of sharing the port); set now, it lets the new sockets bind beside it and form a group with it at
 * index 0 (Linux checks the flag of the bound socket when the next one binds or listens).
 */
static napi_value AllowReuseport(napi_env env, napi_callback_info info) {
  int32_t fd = fd_arg(env, info);
  if (fd < 0) return int_value(env, -EBADF);
  int on = 1;
  return int_value(env, setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) == 0 ? 0 : -errno);
}

/*
 * pendingInput(fd) -> what waits on a socket no worker may read any more: for a listening TCP
 * socket the connections in its accept queue (TCP_INFO's tcpi_unacked there), for UDP the bytes of
 * the next datagram; or -errno. A group that shrinks closes a socket only once it is 0.
 */
static napi_value PendingInput(napi_env env, napi_callback_info info) {
  int32_t fd = fd_arg(env, info);
  if (fd < 0) return int_value(env, -EBADF);
  int type = 0;
  socklen_t length = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) != 0) return int_value(env, -errno);
  if (type == SOCK_STREAM) {
    struct tcp_info tcp;
    length = sizeof(tcp);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &tcp, &length) != 0) return int_value(env, -errno);
    return int_value(env, (int32_t)tcp.tcpi_unacked);
  }
  int bytes = 0;
  if (ioctl(fd, FIONREAD, &bytes) != 0) return int_value(env, -errno);
  return int_value(env, bytes);
}

#define NET SKF_NET_OFF

/* steerBySource(fd, workers) -> 0 or -errno. */
static napi_value SteerBySource(napi_env env, napi_callback_info info) {
  int32_t fd = -1, workers = 0;
  if (!fd_and_count(env, info, &fd, &workers)) return int_value(env, -EINVAL);
  /* The program sees the packet from its network header on (SKF_NET_OFF), IPv4 or IPv6 alike. */
  struct sock_filter code[] = {
    /* 0 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, NET + 0),  /* version and header length */
    /* 1 */ BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 4),
    /* 2 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 0, 11), /* IPv6: on; IPv4: to 14 */
    /* 3 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NET + 8), /* IPv6 source, four words */
    /* 4 */ BPF_STMT(BPF_MISC | BPF_TAX, 0),
    /* 5 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NET + 12),
    /* 6 */ BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
    /* 7 */ BPF_STMT(BPF_MISC | BPF_TAX, 0),
    /* 8 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NET + 16),
    /* 9 */ BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
    /* 10 */ BPF_STMT(BPF_MISC | BPF_TAX, 0),
    /* 11 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NET + 20),
    /* 12 */ BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
    /* 13 */ BPF_JUMP(BPF_JMP | BPF_JA, 1, 0, 0),
    /* 14 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NET + 12), /* IPv4 source */
    /* 15 */ BPF_STMT(BPF_ALU | BPF_MUL | BPF_K, 2654435761u),
    /* 16 */ BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 16),
    /* 17 */ BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, (uint32_t)workers),
    /* 18 */ BPF_STMT(BPF_RET | BPF_A, 0),
  };
  struct sock_fprog program = {.len = sizeof(code) / sizeof(code[0]), .filter = code};
  return int_value(env, setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &program, sizeof(program)) == 0 ? 0 : -errno);
}

/* The shared page: the total on its own cache line, then one count per process slot. */
#define COUNTER_PAGE 4096
#define SLOTS_OFFSET 64
#define COUNTER_SLOTS ((COUNTER_PAGE - SLOTS_OFFSET) / sizeof(atomic_uint))

typedef struct {
  atomic_uint total;
  char pad[SLOTS_OFFSET - sizeof(atomic_uint)];
  atomic_uint slots[COUNTER_SLOTS];
} counter_page;

_Static_assert(sizeof(counter_page) <= COUNTER_PAGE, "the counter fits its page");

static void unmap_page(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  munmap(data, COUNTER_PAGE);
}

/* counterCreate() -> a memfd holding a zeroed page, or -errno. Close-on-exec like every socket. */
static napi_value CounterCreate(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = memfd_create("packetpony-total", MFD_CLOEXEC);
  if (fd < 0) return int_value(env, -errno);
  if (ftruncate(fd, COUNTER_PAGE) != 0) {
    int err = errno;
    close(fd);
    return int_value(env, -err);
  }
  return int_value(env, fd);
}

/* counterOpen(fd) -> an external over the mapped page (unmapped when collected), or -errno. */
static napi_value CounterOpen(napi_env env, napi_callback_info info) {
  int32_t fd = fd_arg(env, info);
  if (fd < 0) return int_value(env, -EBADF);
  void *page = mmap(NULL, COUNTER_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (page == MAP_FAILED) return int_value(env, -errno);
  napi_value external;
  if (napi_create_external(env, page, unmap_page, NULL, &external) != napi_ok) {
    munmap(page, COUNTER_PAGE);
    return int_value(env, -ENOMEM);
  }
  return external;
}

/*
 * The arguments (page, slot, ...) of a counter call, `wanted` of them into argv: the page, or NULL
 * when they are missing or not valid.
 */
static counter_page *counter_args(napi_env env, napi_callback_info info, napi_value *argv, size_t wanted, uint32_t *slot) {
  size_t argc = wanted;
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < wanted ||
      napi_get_value_external(env, argv[0], &data) != napi_ok || data == NULL ||
      napi_get_value_uint32(env, argv[1], slot) != napi_ok || *slot >= COUNTER_SLOTS) {
    return NULL;
  }
  return (counter_page *)data;
}

/*
 * counterAcquire(page, slot, max) -> 1 when the total was under max and now counts one more for
 * this slot, 0 when it is at max. max 0: no cap (log_only and store-down admissions still count).
 */
static napi_value CounterAcquire(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint32_t slot = 0, max = 0;
  counter_page *page = counter_args(env, info, argv, 3, &slot);
  if (page == NULL || napi_get_value_uint32(env, argv[2], &max) != napi_ok) return int_value(env, -EINVAL);
  unsigned current = atomic_load_explicit(&page->total, memory_order_relaxed);
  do {
    if (max != 0 && current >= max) return int_value(env, 0);
  } while (!atomic_compare_exchange_weak_explicit(&page->total, &current, current + 1, memory_order_acq_rel, memory_order_relaxed));
  atomic_fetch_add_explicit(&page->slots[slot], 1, memory_order_relaxed);
  return int_value(env, 1);
}

/* counterRelease(page, slot) -> 0. One connection of this slot closed. */
static napi_value CounterRelease(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint32_t slot = 0;
  counter_page *page = counter_args(env, info, argv, 2, &slot);
  if (page == NULL) return int_value(env, -EINVAL);
  /* A release never runs past what the slot holds (a reclaim may have taken it already). */
  unsigned held = atomic_load_explicit(&page->slots[slot], memory_order_relaxed);
  do {
    if (held == 0) return int_value(env, 0);
  } while (!atomic_compare_exchange_weak_explicit(&page->slots[slot], &held, held - 1, memory_order_relaxed, memory_order_relaxed));
  atomic_fetch_sub_explicit(&page->total, 1, memory_order_acq_rel);
  return int_value(env, 0);
}

/* counterReclaim(page, slot) -> what the slot held, now taken off the total (its process is gone). */
static napi_value CounterReclaim(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint32_t slot = 0;
  counter_page *page = counter_args(env, info, argv, 2, &slot);
  if (page == NULL) return int_value(env, -EINVAL);
  unsigned held = atomic_exchange_explicit(&page->slots[slot], 0, memory_order_acq_rel);
  if (held != 0) atomic_fetch_sub_explicit(&page->total, held, memory_order_acq_rel);
  return int_value(env, (int32_t)held);
}

/* counterTotal(page) -> the listener's open connections now, every worker's together. */
static napi_value CounterTotal(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_external(env, argv[0], &data) != napi_ok || data == NULL) {
    return int_value(env, -EINVAL);
  }
  return int_value(env, (int32_t)atomic_load_explicit(&((counter_page *)data)->total, memory_order_acquire));
}

napi_status reuseport_init(napi_env env, napi_value exports) {
  napi_value slots;
  napi_status status = napi_create_uint32(env, (uint32_t)COUNTER_SLOTS, &slots);
  if (status != napi_ok) return status;
  napi_property_descriptor props[] = {
    {"listenSocket", NULL, ListenSocket, NULL, NULL, NULL, napi_enumerable, NULL},
    {"allowReuseport", NULL, AllowReuseport, NULL, NULL, NULL, napi_enumerable, NULL},
    {"pendingInput", NULL, PendingInput, NULL, NULL, NULL, napi_enumerable, NULL},
    {"steerBySource", NULL, SteerBySource, NULL, NULL, NULL, napi_enumerable, NULL},
    {"counterCreate", NULL, CounterCreate, NULL, NULL, NULL, napi_enumerable, NULL},
    {"counterOpen", NULL, CounterOpen, NULL, NULL, NULL, napi_enumerable, NULL},
    {"counterAcquire", NULL, CounterAcquire, NULL, NULL, NULL, napi_enumerable, NULL},
    {"counterRelease", NULL, CounterRelease, NULL, NULL, NULL, napi_enumerable, NULL},
    {"counterReclaim", NULL, CounterReclaim, NULL, NULL, NULL, napi_enumerable, NULL},
    {"counterTotal", NULL, CounterTotal, NULL, NULL, NULL, napi_enumerable, NULL},
    {"counterSlots", NULL, NULL, NULL, NULL, slots, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}
