/*
 * LD_PRELOAD shim for the load generators of the two-core rows: every IPv4 connect() to a loopback
 * address first binds the socket to the next of PP_BENCH_SOURCES source addresses, 127.1.0.1 + k
 * (k counting on from PP_BENCH_SOURCE_FIRST, so that two client processes use different ones), so the load comes from many client addresses as on an edge box, instead of all from
 * 127.0.0.1. It matters there: PacketPony steers a client address to one worker (by source
 * address, so per-address limits stay exact), and a load from one address would measure one
 * worker. HAProxy and nginx get the same load. The whole of 127.0.0.0/8 is local on Linux, so no
 * set-up is needed.
 *
 * TCP sockets get IP_BIND_ADDRESS_NO_PORT, so the port is still chosen at connect() by the 4-tuple
 * (a bind to port 0 would reserve a port per address at once). A socket already bound, a bind
 * that fails or a shim that is not configured leaves connect() exactly as it was.
 *
 * Built by the bench into .bench/bin (test/bench/tools.ts): cc -shared -fPIC -O2.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

static connect_fn real_connect;
static unsigned sources;
static atomic_uint next_source;

__attribute__((constructor)) static void setup(void) {
  real_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");
  const char *count = getenv("PP_BENCH_SOURCES");
  unsigned long n = count == NULL ? 0 : strtoul(count, NULL, 10);
  sources = n > 65536 ? 65536 : (unsigned)n;
  const char *first = getenv("PP_BENCH_SOURCE_FIRST");
  atomic_store(&next_source, first == NULL ? 0 : (unsigned)strtoul(first, NULL, 10));
}

static void bind_next_source(int fd) {
  struct sockaddr_in bound;
  socklen_t length = sizeof bound;
  if (getsockname(fd, (struct sockaddr *)&bound, &length) != 0 || bound.sin_family != AF_INET) return;
  if (bound.sin_port != 0 || bound.sin_addr.s_addr != htonl(INADDR_ANY)) return;
  int type = 0;
  socklen_t type_length = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_length) == 0 && type == SOCK_STREAM) {
    int on = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on);
  }
  unsigned k = atomic_fetch_add(&next_source, 1) % sources;
  struct sockaddr_in from = { .sin_family = AF_INET, .sin_port = 0, .sin_addr = { htonl(0x7f010001u + k) } };
  bind(fd, (const struct sockaddr *)&from, sizeof from);
}

int connect(int fd, const struct sockaddr *to, socklen_t length) {
  if (sources > 0 && to != NULL && to->sa_family == AF_INET && length >= sizeof(struct sockaddr_in)
      && (ntohl(((const struct sockaddr_in *)to)->sin_addr.s_addr) >> 24) == 127) {
    int saved = errno;
    bind_next_source(fd);
    errno = saved;
  }
  return real_connect(fd, to, length);
}
