/*
 * What the files of PacketPony's native addon share: the entry points each one adds to the
 * addon's exports (addon.c calls them), and two helpers.
 */
#ifndef PACKETPONY_ADDON_H
#define PACKETPONY_ADDON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <node_api.h>
#include <stdint.h>

/* Throws and returns NULL from the calling export when an N-API call fails. */
#define CALL(env, call)                                                            \
  do {                                                                             \
    if ((call) != napi_ok) {                                                       \
      napi_throw_error((env), "ERR_PACKETPONY_NATIVE", "packetpony native: " #call " failed"); \
      return NULL;                                                                 \
    }                                                                              \
  } while (0)

static inline napi_value int_value(napi_env env, int32_t n) {
  napi_value v;
  napi_create_int32(env, n, &v);
  return v;
}

/* The one argument of a call that takes a descriptor, or -1 when it is missing or not one. */
static inline int32_t fd_arg(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    return -1;
  }
  return fd < 0 ? -1 : fd;
}

/* udp_batch.c: the UDP relay's batched datagram path. */
napi_status udp_batch_init(napi_env env, napi_value exports);
/* socket_calls.c: the TCP relay's direct system calls. */
napi_status socket_calls_init(napi_env env, napi_value exports);
/* tcp_reads.c: the TCP relay's reads in batches. */
napi_status tcp_reads_init(napi_env env, napi_value exports);
/* process_calls.c: the C heap's trim and the event loop's clock. */
napi_status process_calls_init(napi_env env, napi_value exports);
/* unix_dgram.c: AF_UNIX datagram sockets (syslog's /dev/log, systemd's notify socket). */
napi_status unix_dgram_init(napi_env env, napi_value exports);
/* socket_bind.c: the supervisor's listening sockets, bound without Node's internals. */
napi_status socket_bind_init(napi_env env, napi_value exports);
/* reuseport.c: a listener's workers: reuseport steering and the shared connection total. */
napi_status reuseport_init(napi_env env, napi_value exports);

#endif
