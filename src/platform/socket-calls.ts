/**
 * The addon's calls straight to a socket's descriptor (src/native/socket_calls.c), for the TCP
 * relay's ends on native handles (native-tcp-end.ts, handle-writer.ts): a chunk's send, a FIN,
 * the reset check and the send queue's size, each one system call with nothing around it.
 */
import { tcpAddon } from './tcp-reads.js';

type SendNow = (fd: number, buffer: Uint8Array, length: number) => number;

/** The addon's calls straight to a socket's descriptor. */
export interface DirectCalls {
  /** One send(2) of a chunk, with no write request, no view and no stream checks around it. */
  readonly sendNow: SendNow;
  /** shutdown(2) of the write half, with no request object and no callback. */
  readonly shutdownNow: (fd: number) => number;
  /** 1 while getpeername(2) succeeds, 0 once the peer is gone (ENOTCONN), or -errno. */
  readonly peerConnected: (fd: number) => number;
  /** The send queue's unacknowledged bytes (SIOCOUTQ), or -errno. */
  readonly unsentBytes: (fd: number) => number;
}

let directLoaded = false;
let direct: DirectCalls | null = null;

/**
 * The addon's direct socket calls, or null without the addon (not Linux, no compiler at install)
 * or where it is not allowed (PACKETPONY_TCP_SEND_NOW=0: allowTcpAddon in tcp-reads.ts): then
 * every chunk goes through Node's writeBuffer (the same system call, with Node's stream checks
 * around it: docs/performance.md, "Measurements behind the code", has the count), every FIN
 * through libuv's shutdown (the same system call a loop turn later, for a request object and a
 * callback into JavaScript), and the reset check through Node's getpeername (which builds the
 * address too).
 */
export function directCalls(): DirectCalls | null {
  if (!directLoaded) {
    directLoaded = true;
    const addon = tcpAddon();
    // Unbound on purpose: the native functions use no `this`, and a bound one costs a trampoline
    // per call.
    direct = addon === null ? null : { sendNow: addon.sendNow, shutdownNow: addon.shutdownNow, peerConnected: addon.peerConnected, unsentBytes: addon.unsentBytes };
  }
  return direct;
}

/** Whether chunks and FINs go straight to the socket (false: through Node's writeBuffer and libuv's shutdown). */
export function sendsNow(): boolean {
  return directCalls() !== null;
}
