/*
 * PacketPony's native addon (Linux, C, N-API), built by `npm run build` (build.mjs) and loaded by
 * src/native/addon.ts. It is optional: without it every path it speeds up has a Node one that
 * behaves the same, only slower. What it holds, one file each:
 * - udp_batch.c: the UDP relay's datagrams in batches (recvmmsg/sendmmsg, one call into
 *   JavaScript per event-loop turn instead of one per datagram);
 * - socket_calls.c: the TCP relay's send, FIN and reset check straight to the socket;
 * - tcp_reads.c: the TCP relay's reads in batches (one epoll set, one call into JavaScript per
 *   batch instead of one per read);
 * - process_calls.c: malloc_trim after a flood, and the event loop's clock shared with
 *   JavaScript;
 * - unix_dgram.c: AF_UNIX datagram sockets, for the local syslog socket and systemd's notify
 *   socket (Node has none);
 * - socket_bind.c: the supervisor's listening sockets, bound without Node's internals;
 * - reuseport.c: a listener's workers: one reuseport group steered by source address, and the
 *   listener's connection total in shared memory.
 */
#include "addon.h"

static napi_value Init(napi_env env, napi_value exports) {
  if (udp_batch_init(env, exports) != napi_ok || socket_calls_init(env, exports) != napi_ok ||
      tcp_reads_init(env, exports) != napi_ok || process_calls_init(env, exports) != napi_ok ||
      unix_dgram_init(env, exports) != napi_ok ||
      socket_bind_init(env, exports) != napi_ok || reuseport_init(env, exports) != napi_ok) {
    napi_throw_error(env, "ERR_PACKETPONY_NATIVE", "packetpony native: cannot define the exports");
    return NULL;
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
