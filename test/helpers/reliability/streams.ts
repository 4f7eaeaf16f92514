/**
 * Large transfers without large memory: a pseudo-random byte stream (AES-128-CTR keystream, a few
 * GB/s, different for every seed, never repeating) sent with backpressure and hashed on both ends,
 * so 1 GiB can be checked end to end with sha256 while the test holds a few hundred KiB.
 */
import { createCipheriv, createHash, type Hash } from 'node:crypto';
import net from 'node:net';
import type { ExecutionContext } from 'ava';

const CHUNK = 256 * 1024;
const ZEROS = Buffer.alloc(CHUNK);

/** An endless pseudo-random stream; two generators with the same seed give the same bytes. */
export class PseudoRandom {
  readonly #cipher;

  constructor(seed: string) {
    const key = createHash('sha256').update(seed).digest();
    this.#cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  }

  next(bytes: number): Buffer {
    return bytes === CHUNK ? this.#cipher.update(ZEROS) : this.#cipher.update(Buffer.alloc(bytes));
  }
}

export interface Sent {
  readonly bytes: number;
  readonly sha256: string;
}

/**
 * Writes `total` bytes of the stream `seed` to `socket` with backpressure, then ends it (unless
 * `end` is false). Resolves with what was written once the last byte is handed to the kernel.
 * `pace(bytes)` may return a delay in ms before the next chunk (a slow sender).
 */
export function sendStream(socket: net.Socket, total: number, seed: string, options: { end?: boolean; chunk?: number } = {}): Promise<Sent> {
  const source = new PseudoRandom(seed);
  const hash = createHash('sha256');
  const chunk = options.chunk ?? CHUNK;
  let sent = 0;
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void => reject(error);
    socket.once('error', onError);
    const pump = (): void => {
      while (sent < total) {
        const data = source.next(Math.min(chunk, total - sent));
        sent += data.length;
        hash.update(data);
        if (!socket.write(data)) {
          socket.once('drain', pump);
          return;
        }
      }
      const done = (): void => {
        socket.off('error', onError);
        resolve({ bytes: sent, sha256: hash.digest('hex') });
      };
      if (options.end === false) socket.write(Buffer.alloc(0), done);
      else socket.end(done);
    };
    pump();
  });
}

/** The sha256 of `total` bytes of the stream `seed`, computed without a socket. */
export function expectedSha256(total: number, seed: string): string {
  const source = new PseudoRandom(seed);
  const hash = createHash('sha256');
  for (let left = total; left > 0; left -= CHUNK) hash.update(source.next(Math.min(CHUNK, left)));
  return hash.digest('hex');
}

export interface Received {
  readonly bytes: number;
  readonly sha256: string;
  /** 'end' for a normal end of stream, otherwise the error code or 'close'. */
  readonly end: string;
}

/** Hashes everything `socket` delivers until it ends or fails. */
export function receiveStream(socket: net.Socket): Promise<Received> {
  const hash: Hash = createHash('sha256');
  let bytes = 0;
  return new Promise((resolve) => {
    let settled = false;
    const finish = (end: string): void => {
      if (settled) return;
      settled = true;
      resolve({ bytes, sha256: hash.digest('hex'), end });
    };
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      hash.update(chunk);
    });
    socket.once('end', () => finish('end'));
    socket.once('error', (error: NodeJS.ErrnoException) => finish(error.code ?? error.message));
    socket.once('close', () => finish('close'));
  });
}

/**
 * Limits how fast `socket` is read: at most `bytesPerSecond`, in ticks of 50 ms. `setRate` changes
 * the pace (Infinity: full speed). The kernel's buffers fill and the peer feels backpressure.
 */
export function throttleReads(socket: net.Socket, bytesPerSecond: number): { setRate(rate: number): void; stop(): void } {
  let rate = bytesPerSecond;
  let budget = rate / 20;
  socket.on('data', (chunk: Buffer) => {
    budget -= chunk.length;
    if (budget <= 0 && rate !== Infinity) socket.pause();
  });
  const timer = setInterval(() => {
    budget = Math.min(budget + rate / 20, rate / 20);
    if (budget > 0 && socket.isPaused()) socket.resume();
  }, 50);
  return {
    setRate(next) {
      rate = next;
      budget = next === Infinity ? Infinity : next / 20;
      socket.resume();
    },
    stop() {
      clearInterval(timer);
      socket.resume();
    },
  };
}

export interface StreamServer {
  readonly port: number;
  /** One entry per accepted connection, in order of arrival. */
  readonly connections: Array<{ socket: net.Socket; received: Promise<Received>; sent: Promise<Sent | null> }>;
}

/**
 * A backend that, per connection, hashes what it receives and sends `sendBytes` bytes of the
 * stream `seedFor(index)` (0: sends nothing and keeps its side open until the client ends).
 */
export async function startStreamServer(
  t: ExecutionContext,
  options: { host?: string; sendBytes?: number; seedFor?: (index: number) => string; onConnection?: (socket: net.Socket, index: number) => void } = {},
): Promise<StreamServer> {
  const connections: StreamServer['connections'] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const index = connections.length;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const received = receiveStream(socket);
    const sendBytes = options.sendBytes ?? 0;
    const sent =
      sendBytes > 0
        ? sendStream(socket, sendBytes, options.seedFor?.(index) ?? `server-${index}`).catch(() => null)
        : received.then(() => (socket.end(), null));
    connections.push({ socket, received, sent });
    options.onConnection?.(socket, index);
  });
  server.on('error', () => {});
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, options.host ?? '127.0.0.1', () => resolve());
  });
  return { port: (server.address() as net.AddressInfo).port, connections };
}
