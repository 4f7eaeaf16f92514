/** Backends for tests, on loopback, closed when the test ends. */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import type { ExecutionContext } from 'ava';
import type { TcpEnd, TcpEnds } from '../../src/platform/tcp-end.js';
import { tcpEnds } from '../../src/proxy/tcp-path.js';

/** Listens on a free port of `host`; the server and the sockets it accepted are closed when the test ends. */
export async function listen(t: ExecutionContext, server: net.Server, host = '127.0.0.1'): Promise<number> {
  const sockets = new Set<net.Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
  });
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  return (server.address() as net.AddressInfo).port;
}

/** Echoes everything back; ends its side when the client ends. */
export function startEchoServer(t: ExecutionContext, host = '127.0.0.1'): Promise<number> {
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.pipe(socket);
  });
  return listen(t, server, host);
}

export interface ExchangeStats {
  receivedSha256: string;
  receivedBytes: number;
}

/**
 * Per connection: sends `sendBytes` random bytes (their sha256 available via `sentSha256` of the
 * returned object for that connection), hashes what it receives, and reports it when the client ends.
 */
export async function startExchangeServer(
  t: ExecutionContext,
  sendBytes: number,
  host = '127.0.0.1',
): Promise<{ port: number; connections: Array<{ sentSha256: string; received: Promise<ExchangeStats> }> }> {
  const connections: Array<{ sentSha256: string; received: Promise<ExchangeStats> }> = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const payload = randomBytes(sendBytes);
    const hash = createHash('sha256');
    let receivedBytes = 0;
    const received = new Promise<ExchangeStats>((resolve) => {
      socket.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        receivedBytes += chunk.length;
      });
      socket.on('end', () => resolve({ receivedSha256: hash.digest('hex'), receivedBytes }));
    });
    connections.push({ sentSha256: createHash('sha256').update(payload).digest('hex'), received });
    socket.end(payload);
  });
  const port = await listen(t, server, host);
  return { port, connections };
}

/** A TCP client that connects, optionally sends, and collects everything until the server ends. */
export function connect(port: number, host = '127.0.0.1'): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host, allowHalfOpen: true });
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

export function readAll(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
  });
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * A loopback port that refuses connections: bound but never listening, so the kernel answers with
 * a reset, and held until the test ends so nobody else can take it (no reserve-then-close race).
 */
export async function refusingPort(t: ExecutionContext, host = '127.0.0.1'): Promise<number> {
  const { bindListener } = await import('../../src/supervisor/socket-owner.js');
  const result = bindListener({ protocol: 'tcp', listen: { host, port: 0 }, ipv6_only: false } as Parameters<typeof bindListener>[0]);
  if (!result.ok) throw new Error(result.message);
  t.teardown(() => result.socket.close());
  return result.socket.port;
}

/** An echo server that counts the connections it accepted: proof that a refused client never reached it. */
export async function startCountingEchoServer(t: ExecutionContext, host = '127.0.0.1'): Promise<{ port: number; accepted: () => number }> {
  let accepted = 0;
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    accepted++;
    socket.pipe(socket);
  });
  const port = await listen(t, server, host);
  return { port, accepted: () => accepted };
}

/**
 * Sends each connection as many random bytes as its first line asks for (`"<bytes> <id>\n"`),
 * then ends; `sent.get(id)` is the sha256 of what it sent, for checking what arrived.
 */
export async function startDownloadServer(t: ExecutionContext, host = '127.0.0.1'): Promise<{ port: number; sent: Map<string, string> }> {
  const sent = new Map<string, string>();
  const server = net.createServer((socket) => {
    let request = '';
    const onData = (chunk: Buffer): void => {
      request += chunk.toString('latin1');
      const newline = request.indexOf('\n');
      if (newline === -1) return;
      socket.off('data', onData);
      const [bytes, id] = request.slice(0, newline).split(' ');
      const payload = randomBytes(Number(bytes));
      sent.set(id ?? '', createHash('sha256').update(payload).digest('hex'));
      socket.end(payload);
    };
    socket.on('data', onData);
  });
  const port = await listen(t, server, host);
  return { port, sent };
}

/**
 * A server whose accepted connections come as TcpEnds, as the product's listeners take them
 * (on this process's path: tcp-path.ts); `onEnd` owns each. The server is closed when the test ends; the ends are the
 * caller's to close.
 */
export async function listenEnds(t: ExecutionContext, onEnd: (end: TcpEnd) => void, host = '127.0.0.1', ends: TcpEnds = tcpEnds()): Promise<number> {
  const server = ends.createServer();
  // Not waiting for the close callback: over net.Socket (the public path) it waits for every
  // accepted connection, and those are the caller's, closed by teardowns that may run after this.
  t.teardown(() => void server.close());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  ends.accept(server, onEnd, (err) => {
    throw err;
  });
  return (server.address() as net.AddressInfo).port;
}

/**
 * One accepted TcpEnd (not reading yet) and the client connected to it (half-open allowed, errors
 * ignored); both are closed when the test ends.
 */
export async function acceptedEnd<E extends TcpEnd = TcpEnd>(t: ExecutionContext, ends: TcpEnds = tcpEnds()): Promise<{ end: E; peer: net.Socket }> {
  let take!: (end: E) => void;
  const got = new Promise<E>((resolve) => (take = resolve));
  const port = await listenEnds(t, (end) => take(end as E), '127.0.0.1', ends);
  const peer = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  peer.on('error', () => {});
  t.teardown(() => void peer.destroy());
  const end = await got;
  t.teardown(() => end.close());
  return { end, peer };
}
