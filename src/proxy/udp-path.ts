/**
 * How a UDP relay's datagrams get in and out, behind one small interface, so that the relay
 * (udp-relay.ts) holds the rules once and each path only its I/O:
 * - udp-node-path.ts: Node's dgram sockets, a call per datagram;
 * - udp-batched-path.ts: the addon's recvmmsg and sendmmsg (udp-batch.ts), a call per batch.
 * A path reads the listening socket and the sessions' upstream sockets, finds each datagram's
 * session in the relay's table, asks the relay (a DatagramRelay) whether to forward it, and sends
 * it on. The relay asks the path to take a new session's upstream socket on, and to let it go.
 *
 * Per datagram, on either path: one table lookup, the relay's fromClient or fromTarget, one queued
 * send. No clock read, no closure, no logging, no allocation of ours.
 */
import type { ErrorType } from '../telemetry/stats.js';
import type { SessionTable, UdpSession } from './udp-sessions.js';

/** Which way a datagram moves: 'sent' = client → target, 'received' = target → client. */
export type UdpDirection = 'sent' | 'received';

/** What the relay asks of the path its datagrams take. */
export interface DatagramPath<A> {
  /** True for the batched path. */
  readonly batched: boolean;
  /**
   * Starts reading a new session's upstream socket, before the session is in the table. False:
   * it could not (counted as 'session_create' through the relay, and the socket closed).
   */
  attach(session: UdpSession<A>): boolean;
  /** The session has ended; its upstream socket is closed right after. */
  detach(session: UdpSession<A>): void;
  /** Stops reading the listening socket (a hand-over). False if Node did not let reading stop. */
  stopReceiving(): boolean;
  /** Stops reading every socket; the path's listeners leave the listening socket. */
  close(): void;
}

/** What a path asks of its relay. */
export interface DatagramRelay<A> {
  readonly table: SessionTable<A>;
  /** The largest datagram forwarded (udp.buffer_size, at most 64 KiB); longer ones are oversize. */
  readonly bufferSize: number;
  /** The first datagram from a client: its new session, or undefined (dropped, counted). */
  openSession(address: string, port: number): UdpSession<A> | undefined;
  /** Client → target: meter and count. False: drop it. */
  fromClient(session: UdpSession<A>, bytes: number): boolean;
  /** Target → client: meter and count. False: drop it. */
  fromTarget(session: UdpSession<A>, bytes: number): boolean;
  /** A datagram longer than bufferSize, dropped whole. */
  oversize(address: string, port: number, direction: UdpDirection): void;
  /** An error to count and report; `clientIp` undefined when no client is concerned. */
  error(type: ErrorType, err: unknown, clientIp: string | undefined, clientPort: number): void;
  /** A session's upstream socket reported an error (ECONNREFUSED from the target, say). */
  upstreamError(session: UdpSession<A>, err: Error): void;
}
