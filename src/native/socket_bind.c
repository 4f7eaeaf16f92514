/*
 * The supervisor's listening sockets, made without Node's internals (src/supervisor/socket-owner.ts
 * says when this path is taken): a socket created and bound here, never listened on or read here,
 * whose descriptor the supervisor keeps open across its children and hands each new child at spawn.
 * The child then serves it with public APIs: net.Server#listen({ fd }) for TCP (its listen() makes
 * the shared socket listen; the backlog outlives that child), dgram's bind({ fd }) for UDP.
 *
 * What libuv does when Node binds, done the same way so that both paths give the same socket:
 * SO_REUSEADDR on TCP (a restarted daemon can bind over connections in TIME_WAIT), never on UDP;
 * IPV6_V6ONLY exactly as asked (Linux's default follows a sysctl); non-blocking and close-on-exec
 * (a child inherits it only where it is named in the spawn's stdio, which clears the flag there).
 * SO_REUSEPORT only for a listener with several workers, whose sockets share the address
 * (reuseport.c).
 */
#include "addon.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ADDRESS_MAX 64

/*
 * bindSocket(udp, address, port, v6only[, reuseport]) -> a descriptor, or -errno. `udp`: 1 for a
 * datagram socket, 0 for a stream one. `address`: an IPv4 or IPv6 literal (a scope such as
 * fe80::1%eth0 allowed). `v6only`: for an IPv6 address, 1 to take IPv6 only, 0 for dual stack.
 * `reuseport`: 1 to join the address's SO_REUSEPORT group.
 */
static napi_value BindSocket(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  int32_t udp = 0, port = -1, v6only = 0, reuseport = 0;
  char address[ADDRESS_MAX];
  size_t length = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 ||
      napi_get_value_int32(env, argv[0], &udp) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], address, sizeof(address), &length) != napi_ok ||
      napi_get_value_int32(env, argv[2], &port) != napi_ok ||
      napi_get_value_int32(env, argv[3], &v6only) != napi_ok || port < 0 || port > 65535 ||
      length == 0 || length >= sizeof(address) - 1 ||
      (argc >= 5 && napi_get_value_int32(env, argv[4], &reuseport) != napi_ok)) {
    return int_value(env, -EINVAL);
  }
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = udp ? SOCK_DGRAM : SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
  struct addrinfo *found = NULL;
  /* Numeric only: no name is ever looked up, so this cannot block. */
  if (getaddrinfo(address, NULL, &hints, &found) != 0 || found == NULL) return int_value(env, -EINVAL);
  struct sockaddr_storage where;
  socklen_t where_length = (socklen_t)found->ai_addrlen;
  int family = found->ai_family;
  memcpy(&where, found->ai_addr, found->ai_addrlen);
  freeaddrinfo(found);
  if (family == AF_INET) ((struct sockaddr_in *)&where)->sin_port = htons((uint16_t)port);
  else ((struct sockaddr_in6 *)&where)->sin6_port = htons((uint16_t)port);

  int fd = socket(family, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return int_value(env, -errno);
  int on = 1;
  int v6 = v6only ? 1 : 0;
  if ((!udp && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0) ||
      (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) ||
      (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6, sizeof(v6)) != 0) ||
      bind(fd, (struct sockaddr *)&where, where_length) != 0) {
    int err = errno;
    close(fd);
    return int_value(env, -err);
  }
  return int_value(env, fd);
}

/* boundPort(fd) -> the port the socket is bound to (port 0 resolved), or -errno. */
static napi_value BoundPort(napi_env env, napi_callback_info info) {
  int32_t fd = fd_arg(env, info);
  if (fd < 0) return int_value(env, -EBADF);
  struct sockaddr_storage local;
  socklen_t length = sizeof(local);
  if (getsockname(fd, (struct sockaddr *)&local, &length) != 0) return int_value(env, -errno);
  if (local.ss_family == AF_INET) return int_value(env, ntohs(((struct sockaddr_in *)&local)->sin_port));
  if (local.ss_family == AF_INET6) return int_value(env, ntohs(((struct sockaddr_in6 *)&local)->sin6_port));
  return int_value(env, -EAFNOSUPPORT);
}

/* closeSocket(fd) -> 0 or -errno. The supervisor's copy only: children keep theirs. */
static napi_value CloseSocket(napi_env env, napi_callback_info info) {
  int32_t fd = fd_arg(env, info);
  if (fd < 0) return int_value(env, -EBADF);
  return int_value(env, close(fd) == 0 ? 0 : -errno);
}

napi_status socket_bind_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"bindSocket", NULL, BindSocket, NULL, NULL, NULL, napi_enumerable, NULL},
    {"boundPort", NULL, BoundPort, NULL, NULL, NULL, napi_enumerable, NULL},
    {"closeSocket", NULL, CloseSocket, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}
