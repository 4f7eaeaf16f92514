/**
 * Transfers that the daemon may cut, and how their peers learn of it: what arrived, byte for
 * byte, and whether the stream ended with a FIN (a clean end) or a reset.
 *
 * A reset can look like a clean end to a Node.js peer: libuv reports a reset that arrives right
 * after data as an end of stream (POLLHUP after a partial read) and never reads the error. So at
 * an end of stream the peer writes one byte: a connection the other side only half-closed (FIN)
 * takes it, a reset one fails it (EPIPE, ECONNRESET). Sockets are half-open capable for that.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { ExecutionContext } from 'ava';
import { listen } from './servers.js';

export interface StreamEnd {
  /** Everything that arrived, in order. */
  readonly data: Buffer;
  /** 'fin': a clean end; 'reset': the peer learned that the stream was cut. */
  readonly end: 'fin' | 'reset';
  /** The error that told it (ECONNRESET, or EPIPE for the write after an end of stream). */
  readonly code?: string;
  /** performance.now() of each arrival, with its size (for pacing). */
  readonly arrivals: readonly (readonly [at: number, bytes: number])[];
}

/** Collects what `socket` receives until it ends, telling a clean end from a reset (see the header). */
export function collectUntilEnd(socket: net.Socket): Promise<StreamEnd> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const arrivals: [number, number][] = [];
    let settled = false;
    const settle = (end: 'fin' | 'reset', code?: string): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve({ data: Buffer.concat(chunks), end, arrivals, ...(code !== undefined ? { code } : {}) });
    };
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      arrivals.push([performance.now(), chunk.length]);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => settle('reset', err.code ?? err.message));
    socket.on('end', () => {
      if (socket.destroyed || !socket.writable) {
        settle('reset', 'closed');
        return;
      }
      socket.write('?', (err?: Error | null) => {
        if (err) settle('reset', (err as NodeJS.ErrnoException).code ?? err.message);
        else settle('fin');
      });
    });
    socket.on('close', () => settle('reset', 'closed'));
  });
}

export interface CutClientOptions {
  readonly localAddress?: string;
  /** Sent once connected (e.g. a download request, or an upload). */
  readonly send?: Buffer | string;
}

/** Connects to the daemon on `port`, sends `options.send` and collects until the stream ends. */
export function receiveUntilEnd(t: ExecutionContext, port: number, options: CutClientOptions = {}): Promise<StreamEnd> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true, ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
  t.teardown(() => void socket.destroy());
  if (options.send !== undefined) socket.once('connect', () => socket.write(options.send!));
  return collectUntilEnd(socket);
}

/** A backend that answers "N id\n" with N random bytes and keeps them, to compare with what arrived. */
export async function startPayloadServer(t: ExecutionContext): Promise<{ port: number; payloads: Map<string, Buffer> }> {
  const payloads = new Map<string, Buffer>();
  const server = net.createServer((socket) => {
    let request = '';
    const onData = (chunk: Buffer): void => {
      request += chunk.toString('latin1');
      const newline = request.indexOf('\n');
      if (newline === -1) return;
      socket.off('data', onData);
      const [bytes, id] = request.slice(0, newline).split(' ');
      const payload = randomBytes(Number(bytes));
      payloads.set(id ?? '', payload);
      socket.end(payload);
    };
    socket.on('data', onData);
  });
  return { port: await listen(t, server), payloads };
}

/** A backend that reads everything each connection sends; `ends` holds one promise per connection. */
export async function startCollectingServer(t: ExecutionContext): Promise<{ port: number; ends: Promise<StreamEnd>[] }> {
  const ends: Promise<StreamEnd>[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => ends.push(collectUntilEnd(socket)));
  return { port: await listen(t, server), ends };
}
