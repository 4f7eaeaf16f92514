/**
 * The relay's ends on Node's native TCP handles (native-tcp-end.ts says why): how this process
 * dials, writes and accepts on them, as the TcpEnds of tcp-end.ts that src/proxy/tcp-path.ts
 * chooses where the tcp_wrap probe says yes.
 */
import net from 'node:net';
import { HandleWriter } from './handle-writer.js';
import { NativeTcpEnd, tcpBindings } from './native-tcp-end.js';
import { socketError, type TcpEnd, type TcpEnds } from './tcp-end.js';
import { batchedReads } from './tcp-reads.js';
import { serverHandle } from './tcp-wrap.js';

const UV_EBADF = -9;

/**
 * Takes over a listening net.Server's accepts: each connection arrives as a TcpEnd (not reading
 * yet), never as a net.Socket, and a failed accept (EMFILE…) as an error with syscall 'accept'.
 * Call once the server is listening. The server's own 'connection' event, maxConnections and
 * connection count no longer apply; close() still stops the listening.
 */
export function acceptEnds(
  server: net.Server,
  onConnection: (end: TcpEnd) => void,
  onError: (err: NodeJS.ErrnoException) => void,
): void {
  tcpBindings();
  const handle = serverHandle(server);
  if (handle === null) throw new Error('acceptEnds: the server is not listening');
  handle.onconnection = (err, client) => {
    if (err !== 0 || client === undefined) {
      onError(socketError(err === 0 ? UV_EBADF : err, 'accept'));
      return;
    }
    onConnection(new NativeTcpEnd(client));
  };
}

/**
 * Sets TCP_NODELAY and keepalive (first probe after `keepAliveMs`) on a listening server's socket,
 * so that the connections it accepts start with them: Linux copies a listening socket's options
 * to each connection it accepts, which saves five system calls per connection (a noticeable share
 * of a child's CPU under a connection per request: docs/performance.md, "Measurements behind the
 * code").
 * Returns whether that applies (Linux, and both calls succeeded); otherwise set them per
 * connection. The listening socket is shared by every child of the listener, which all want the same.
 */
export function presetAcceptedOptions(server: net.Server, keepAliveMs: number): boolean {
  if (process.platform !== 'linux') return false;
  const handle = serverHandle(server);
  if (handle === null || typeof handle.setNoDelay !== 'function' || typeof handle.setKeepAlive !== 'function') return false;
  if (handle.setNoDelay(true) !== 0) return false;
  return keepAliveMs <= 0 || handle.setKeepAlive(true, Math.floor(keepAliveMs / 1000)) === 0;
}

/** The relay's ends on native handles (the contract: tcp-end.ts). */
export const nativeTcpEnds: TcpEnds = {
  description: "node's native TCP handles",
  dial: (address, port, family) => NativeTcpEnd.dial(address, port, family),
  writer: (onComplete) => new HandleWriter(onComplete),
  // The options matter only to net.Server's own accepts, which acceptEnds replaces.
  createServer: () => net.createServer({ allowHalfOpen: true, pauseOnConnect: true }),
  accept: acceptEnds,
  presetAcceptedOptions,
  prepare: () => {
    batchedReads();
  },
};
