/*
 * The TCP relay's calls straight to a socket's descriptor (src/proxy/tcp-handle.ts): a chunk's
 * send, a FIN, the check that an end of stream was not a reset, and the size of the send queue. Each makes the one system call
 * Node's stream machinery would make, without the request objects, views, address strings and
 * callbacks around it. libuv keeps owning every socket: these only borrow its descriptor while the
 * relay knows it is open. See each.
 */
#include "addon.h"

#include <errno.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

/*
 * sendNow(fd, buffer, length) -> the bytes of buffer[0, length) the kernel took at once (0 when it
 * took none: EAGAIN), or -errno. The TCP relay's write of a chunk to a socket whose libuv write
 * queue is empty (src/proxy/tcp-handle.ts, HandleWriter): the same system call libuv's try-write
 * makes, without Node's stream machinery around it (a write request, a view of the exact length,
 * the stream's checks: ~750 instructions per chunk, counted with callgrind). libuv keeps owning
 * the socket; what the kernel did not take goes through libuv's queue as before. MSG_NOSIGNAL: a
 * peer that is gone is EPIPE here, never SIGPIPE.
 */
static napi_value SendNow(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd = -1, length = -1;
  void *data = NULL;
  size_t capacity = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_buffer_info(env, argv[1], &data, &capacity) != napi_ok ||
      napi_get_value_int32(env, argv[2], &length) != napi_ok || fd < 0 || length < 0 ||
      (size_t)length > capacity) {
    return int_value(env, -EINVAL);
  }
  ssize_t sent;
  do sent = send(fd, data, (size_t)length, MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  if (sent >= 0) return int_value(env, (int32_t)sent);
  return int_value(env, errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno);
}

/*
 * shutdownNow(fd) -> 0 or -errno: shutdown(fd, SHUT_WR), our FIN, at once. For a socket libuv holds
 * no writes for (the relay checks that first): libuv's own shutdown would wait a loop turn for the
 * socket to be writable, through a request object and a callback into JavaScript, to make this
 * same system call. libuv keeps owning the socket and is never asked to write to it again.
 */
static napi_value ShutdownNow(napi_env env, napi_callback_info info) {
  int32_t fd = fd_arg(env, info);
  if (fd < 0) return int_value(env, -EINVAL);
  return int_value(env, shutdown(fd, SHUT_WR) == 0 ? 0 : -errno);
}

/*
 * peerConnected(fd) -> 1 while the socket still has a peer (getpeername(2) succeeds), 0 once it
 * has none (ENOTCONN: the peer's reset closed it), -errno on any other error. The relay's check,
 * at an end of stream, that it was a FIN and not a reset reported as one (wasReset() in
 * src/proxy/tcp-handle.ts): the same system call as Node's getpeername, without the address
 * strings and object Node builds from it.
 */
static napi_value PeerConnected(napi_env env, napi_callback_info info) {
  int32_t fd = fd_arg(env, info);
  if (fd < 0) return int_value(env, -EINVAL);
  struct sockaddr_storage peer;
  socklen_t length = sizeof(peer);
  if (getpeername(fd, (struct sockaddr *)&peer, &length) == 0) return int_value(env, 1);
  return int_value(env, errno == ENOTCONN ? 0 : -errno);
}

/*
 * unsentBytes(fd) -> the bytes of the socket's send queue the peer has not acknowledged yet
 * (ioctl SIOCOUTQ: sent but unacknowledged, plus not sent at all), or -errno. The relay asks before
 * it resets a connection that a bandwidth cap cut: a reset throws that queue away, so it waits until
 * the queue is empty (every byte relayed has reached the peer's kernel) or a deadline passes, and
 * then knows how many of the bytes it relayed never arrived (src/proxy/tcp-relay.ts).
 */
static napi_value UnsentBytes(napi_env env, napi_callback_info info) {
  int32_t fd = fd_arg(env, info);
  if (fd < 0) return int_value(env, -EINVAL);
  int queued = 0;
  if (ioctl(fd, SIOCOUTQ, &queued) != 0) return int_value(env, -errno);
  return int_value(env, queued < 0 ? 0 : queued);
}

napi_status socket_calls_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"sendNow", NULL, SendNow, NULL, NULL, NULL, napi_enumerable, NULL},
    {"shutdownNow", NULL, ShutdownNow, NULL, NULL, NULL, napi_enumerable, NULL},
    {"peerConnected", NULL, PeerConnected, NULL, NULL, NULL, napi_enumerable, NULL},
    {"unsentBytes", NULL, UnsentBytes, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}
