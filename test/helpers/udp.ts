/**
 * UDP peers for tests, on loopback, closed when the test ends: a recording backend, a client that
 * keeps its replies in order, a target port that answers with ICMP port unreachable, and a small
 * reliable transfer (sequence numbers, acknowledgements, retransmission) for measuring what a
 * rate limit lets through when datagrams are dropped on purpose.
 */
import dgram from 'node:dgram';
import type { ExecutionContext } from 'ava';
import { waitFor } from './wait-for.js';

export interface Datagram {
  readonly address: string;
  readonly port: number;
  readonly data: Buffer;
}

/** What a backend answers to a datagram; null: no answer. */
export type Responder = (data: Buffer, from: dgram.RemoteInfo) => Buffer | null;

export const echo: Responder = (data) => data;

export interface UdpBackend {
  readonly port: number;
  readonly socket: dgram.Socket;
  /** Every datagram received, in order. */
  readonly received: Datagram[];
}

export interface UdpBackendOptions {
  readonly host?: string;
  readonly port?: number;
  readonly respond?: Responder;
  /** SO_REUSEADDR, to take over a port an unreachableUdpPort() holds. */
  readonly reuseAddr?: boolean;
}

function socketType(host: string): 'udp4' | 'udp6' {
  return host.includes(':') ? 'udp6' : 'udp4';
}

function closeWith(t: ExecutionContext, socket: dgram.Socket): void {
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        try {
          socket.close(() => resolve());
        } catch {
          resolve(); // closed by the test already
        }
      }),
  );
}

async function bind(socket: dgram.Socket, port: number, host: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(port, host, () => {
      socket.off('error', reject);
      resolve();
    });
  });
}

/** A backend that records every datagram and answers with `respond` (default: echo). */
export async function startUdpBackend(t: ExecutionContext, options: UdpBackendOptions = {}): Promise<UdpBackend> {
  const host = options.host ?? '127.0.0.1';
  const respond = options.respond ?? echo;
  const socket = dgram.createSocket({ type: socketType(host), reuseAddr: options.reuseAddr ?? false });
  closeWith(t, socket);
  const received: Datagram[] = [];
  socket.on('message', (data, from) => {
    received.push({ address: from.address, port: from.port, data });
    const answer = respond(data, from);
    if (answer !== null) socket.send(answer, from.port, from.address);
  });
  socket.on('error', () => {}); // an ICMP error for a client that went away is no failure here
  await bind(socket, options.port ?? 0, host);
  return { port: socket.address().port, socket, received };
}

/**
 * A UDP port on `host` nobody receives on: datagrams to it draw ICMP port unreachable. It is held
 * by a socket connected to another port (Linux delivers a datagram only to a connected socket
 * whose peer sent it, and answers everything else as unreachable), so no other program can take
 * it; `serve()` later starts a backend on the same port (both sockets use SO_REUSEADDR), making
 * the target reachable without any reserve-then-close race.
 */
export async function unreachableUdpPort(
  t: ExecutionContext,
  host = '127.0.0.1',
): Promise<{ port: number; serve(respond?: Responder): Promise<UdpBackend> }> {
  const holder = dgram.createSocket({ type: socketType(host), reuseAddr: true });
  closeWith(t, holder);
  holder.on('error', () => {});
  await bind(holder, 0, host);
  const port = holder.address().port;
  // Port 9 (discard) on the same host: any peer will do, as long as it is not the daemon.
  await new Promise<void>((resolve) => holder.connect(9, host, () => resolve()));
  return { port, serve: (respond) => startUdpBackend(t, { host, port, respond: respond ?? echo, reuseAddr: true }) };
}

export interface UdpClient {
  readonly socket: dgram.Socket;
  /** The client's own (source) port. */
  readonly localPort: number;
  /** Every reply, in order of arrival. */
  readonly replies: Buffer[];
  send(data: Buffer | string): void;
  /** The `index`th reply (0-based), waiting up to `timeoutMs` for it. */
  reply(index: number, timeoutMs?: number): Promise<Buffer>;
  /** Sends and waits for the reply that follows it. */
  request(data: Buffer | string, timeoutMs?: number): Promise<Buffer>;
  close(): Promise<void>;
}

export interface UdpClientOptions {
  /** The daemon's address; default 127.0.0.1. */
  readonly host?: string;
  /** Source address to bind, e.g. 127.0.0.2 to be another client. */
  readonly localAddress?: string;
}

/** A client socket connected to the daemon at `host:port`. */
export async function udpClient(t: ExecutionContext, port: number, options: UdpClientOptions = {}): Promise<UdpClient> {
  const host = options.host ?? '127.0.0.1';
  const socket = dgram.createSocket(socketType(host));
  closeWith(t, socket);
  const replies: Buffer[] = [];
  socket.on('message', (data) => replies.push(data));
  socket.on('error', () => {}); // ICMP errors: the test looks at replies and logs instead
  await bind(socket, 0, options.localAddress ?? (host.includes(':') ? '::1' : '127.0.0.1'));
  await new Promise<void>((resolve) => socket.connect(port, host, () => resolve()));
  const reply = (index: number, timeoutMs = 5000): Promise<Buffer> =>
    waitFor(() => replies[index], `reply #${index} on client port ${socket.address().port}`, timeoutMs);
  return {
    socket,
    localPort: socket.address().port,
    replies,
    send: (data) => socket.send(data),
    reply,
    request(data, timeoutMs) {
      const index = replies.length;
      socket.send(data);
      return reply(index, timeoutMs);
    },
    close: () =>
      new Promise<void>((resolve) => {
        try {
          socket.close(() => resolve());
        } catch {
          resolve();
        }
      }),
  };
}

/** Backend answer for reliableTransfer(): only the 4-byte sequence number back. */
export const ackSequence: Responder = (data) => data.subarray(0, 4);

export interface TransferOptions {
  /** Payload bytes per datagram, sequence number included. */
  readonly chunk: number;
  /** Datagrams in flight at most. */
  readonly window?: number;
  /** Resend a datagram not acknowledged after this long. */
  readonly retransmitMs?: number;
  /** Stop when no new acknowledgement came for this long (a rate limit that drops for good). */
  readonly giveUpMs?: number;
}

export interface TransferResult {
  /** Whether every datagram was acknowledged. */
  readonly complete: boolean;
  /** Datagrams acknowledged. */
  readonly acknowledged: number;
  /** Bytes acknowledged: acknowledged × chunk. */
  readonly deliveredBytes: number;
  readonly retransmits: number;
  /** From the first send to the last acknowledgement. */
  readonly elapsedMs: number;
}

/**
 * Moves `total` bytes over `client` as datagrams of `chunk` bytes, each starting with its sequence
 * number, resending what is not acknowledged; the backend must answer with the sequence number
 * first (ackSequence, or echo). Loss on loopback and datagrams a limit drops only cost time.
 */
export function reliableTransfer(client: UdpClient, total: number, options: TransferOptions): Promise<TransferResult> {
  const { chunk } = options;
  const windowSize = options.window ?? 8;
  const retransmitMs = options.retransmitMs ?? 30;
  const giveUpMs = options.giveUpMs ?? 3000;
  const count = Math.ceil(total / chunk);
  const payload = Buffer.alloc(chunk, 0x5a);
  const outstanding = new Map<number, number>(); // sequence → when last sent
  const done = new Uint8Array(count);
  let next = 0;
  let acknowledged = 0;
  let retransmits = 0;
  const started = performance.now();
  let lastAck = started;

  const send = (seq: number, now: number): void => {
    const datagram = Buffer.from(payload);
    datagram.writeUInt32BE(seq, 0);
    client.socket.send(datagram);
    outstanding.set(seq, now);
  };

  return new Promise<TransferResult>((resolve) => {
    const finish = (complete: boolean): void => {
      clearInterval(timer);
      client.socket.off('message', onMessage);
      resolve({ complete, acknowledged, deliveredBytes: acknowledged * chunk, retransmits, elapsedMs: lastAck - started });
    };
    const pump = (now: number): void => {
      for (const [seq, at] of outstanding) {
        if (now - at >= retransmitMs) {
          retransmits++;
          send(seq, now);
        }
      }
      while (outstanding.size < windowSize && next < count) send(next++, now);
    };
    const onMessage = (data: Buffer): void => {
      if (data.length < 4) return;
      const seq = data.readUInt32BE(0);
      if (seq >= count || done[seq] === 1) return;
      done[seq] = 1;
      outstanding.delete(seq);
      acknowledged++;
      lastAck = performance.now();
      if (acknowledged === count) finish(true);
      else pump(lastAck);
    };
    client.socket.on('message', onMessage);
    const timer = setInterval(() => {
      const now = performance.now();
      if (now - lastAck > giveUpMs) finish(false);
      else pump(now);
    }, Math.max(5, retransmitMs / 2));
    pump(started);
  });
}

/** Distinct sequence numbers a backend received from reliableTransfer(), times `chunk`. */
export function uniqueBytes(received: readonly Datagram[], chunk: number): number {
  const seen = new Set<number>();
  for (const { data } of received) if (data.length === chunk) seen.add(data.readUInt32BE(0));
  return seen.size * chunk;
}
