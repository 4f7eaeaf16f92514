/**
 * Reliability case 2 — resets mid-transfer. A backend that resets a connection while it streams to
 * the client, and a client that resets while it streams to the backend.
 *
 * Pass criteria: the other side sees its connection reset within 100 ms of the reset, every time —
 * a reset, never a clean end of stream, so a truncated transfer cannot pass for a complete one; the
 * child's open-descriptor count returns to its baseline; the close events carry the reset as their
 * error.
 */
import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import { startDaemon } from '../helpers/daemon.js';
import { connectionLines } from '../helpers/log-lines.js';
import { waitFor } from '../helpers/wait-for.js';
import { summary } from '../helpers/reliability/clients.js';
import { tcpListener } from '../helpers/reliability/config.js';
import { fdCount } from '../helpers/reliability/proc.js';
import { lateBound, size } from '../helpers/reliability/scale.js';
import { PseudoRandom } from '../helpers/reliability/streams.js';

const WITHIN_MS = 100;
const ROUNDS = size(20, 200);
/** Bytes that must have crossed the proxy before the reset: it happens mid-transfer. */
const BEFORE_RESET = 1024 * 1024;

/**
 * What an end of stream really was: libuv reports a reset that arrives right after data as an end
 * of stream, on our side as in the proxy; the kernel knows (see NativeTcpEnd.wasReset in src/platform/native-tcp-end.ts):
 * after a reset, getpeername() fails.
 */
function endKind(socket: net.Socket): string {
  if (socket.writableEnded) return 'end (FIN)';
  const handle = (socket as unknown as { _handle: { getpeername(out: object): number } | null })._handle;
  return handle !== null && handle.getpeername({}) !== 0 ? 'ECONNRESET' : 'end (FIN)';
}

function tally(values: readonly string[]): string {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].map(([k, n]) => `${k} ×${n}`).join(', ');
}

/** A backend that streams to each connection forever, or reads forever, as asked. */
async function streamingBackend(t: ExecutionContext, mode: 'send' | 'read'): Promise<{ port: number; sockets: net.Socket[]; ended: Map<net.Socket, [number, string]> }> {
  const sockets: net.Socket[] = [];
  const ended = new Map<net.Socket, [number, string]>();
  const server = net.createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    const mark = (how: string): void => void (ended.has(socket) || ended.set(socket, [performance.now(), how]));
    socket.on('end', () => mark(endKind(socket)));
    socket.on('close', () => mark('close'));
    socket.on('error', (error: NodeJS.ErrnoException) => mark(error.code ?? error.message));
    if (mode === 'read') {
      socket.resume();
      return;
    }
    const source = new PseudoRandom('backend');
    const pump = (): void => {
      while (!socket.destroyed && socket.write(source.next(256 * 1024)));
      if (!socket.destroyed) socket.once('drain', pump);
    };
    pump();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  return { port: (server.address() as net.AddressInfo).port, sockets, ended };
}

test.serial(`backend resets mid-download: the client sees the end within ${WITHIN_MS} ms (${ROUNDS} rounds), child fds back to baseline`, async (t) => {
  const backend = await streamingBackend(t, 'send');
  const daemon = await startDaemon(t, { 'conf.d/rst.yaml': tcpListener(`127.0.0.1:${backend.port}`) });
  const port = await daemon.port('rst');
  const pid = await daemon.childPid('rst');
  const baseline = fdCount(pid);
  const delays: number[] = [];
  const hows: string[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const client = net.connect(port, '127.0.0.1');
    t.teardown(() => void client.destroy());
    let received = 0;
    const ended = new Promise<[number, string]>((resolve) => {
      const done = (how: string): void => resolve([performance.now(), how]);
      client.once('end', () => done(endKind(client)));
      client.once('error', (error: NodeJS.ErrnoException) => done(error.code ?? error.message));
      client.once('close', () => done('close'));
    });
    client.on('data', (chunk: Buffer) => (received += chunk.length));
    await waitFor(() => received >= BEFORE_RESET, 'data flowing to the client');
    const server = backend.sockets[round]!;
    const resetAt = performance.now();
    server.resetAndDestroy();
    const [endedAt, how] = await ended;
    delays.push(endedAt - resetAt);
    hows.push(how);
    client.destroy();
  }
  t.log(`the client saw: ${tally(hows)}`);
  t.deepEqual(new Set(hows), new Set(['ECONNRESET']));
  t.log(`backend RST → client closed (ms): ${summary(delays, 1)}`);
  t.true(Math.max(...delays) <= lateBound(WITHIN_MS), summary(delays, 1));
  const closes = await waitFor(() => (connectionLines(daemon, 'closed', 'rst').length >= ROUNDS ? connectionLines(daemon, 'closed', 'rst') : undefined), 'the close events');
  t.true(closes.every((l) => l.includes('error="target connection reset by peer (ECONNRESET)"')), closes.find((l) => !l.includes('ECONNRESET')));
  await waitFor(() => fdCount(pid) <= baseline || undefined, `child fds back to ${baseline} (now ${fdCount(pid)})`);
  t.log(`child fds: baseline ${baseline}, after ${fdCount(pid)}`);
});

test.serial(`client resets mid-upload: the backend sees the end within ${WITHIN_MS} ms (${ROUNDS} rounds), child fds back to baseline`, async (t) => {
  const backend = await streamingBackend(t, 'read');
  const daemon = await startDaemon(t, { 'conf.d/rst.yaml': tcpListener(`127.0.0.1:${backend.port}`) });
  const port = await daemon.port('rst');
  const pid = await daemon.childPid('rst');
  const baseline = fdCount(pid);
  const delays: number[] = [];
  const hows: string[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const client = net.connect(port, '127.0.0.1');
    client.on('error', () => {});
    t.teardown(() => void client.destroy());
    const source = new PseudoRandom(`client-${round}`);
    let sent = 0;
    let stop = false;
    const pump = (): void => {
      while (!stop && !client.destroyed) {
        sent += 256 * 1024;
        if (!client.write(source.next(256 * 1024))) {
          client.once('drain', pump);
          return;
        }
      }
    };
    client.once('connect', pump);
    const server = await waitFor(() => backend.sockets[round], 'the backend connection');
    let received = 0;
    server.on('data', (chunk: Buffer) => (received += chunk.length));
    await waitFor(() => received >= BEFORE_RESET, 'data flowing to the backend');
    stop = true;
    const resetAt = performance.now();
    client.resetAndDestroy();
    const [endedAt, how] = await waitFor(() => backend.ended.get(server), 'the backend to see the end');
    delays.push(endedAt - resetAt);
    hows.push(how);
  }
  t.log(`the backend saw: ${tally(hows)}`);
  t.deepEqual(new Set(hows), new Set(['ECONNRESET']));
  t.log(`client RST → backend closed (ms): ${summary(delays, 1)}`);
  t.true(Math.max(...delays) <= lateBound(WITHIN_MS), summary(delays, 1));
  const closes = await waitFor(() => (connectionLines(daemon, 'closed', 'rst').length >= ROUNDS ? connectionLines(daemon, 'closed', 'rst') : undefined), 'the close events');
  t.true(closes.every((l) => l.includes('error="client connection reset by peer (ECONNRESET)"')), closes.find((l) => !l.includes('ECONNRESET')));
  await waitFor(() => fdCount(pid) <= baseline || undefined, `child fds back to ${baseline} (now ${fdCount(pid)})`);
  t.log(`child fds: baseline ${baseline}, after ${fdCount(pid)}`);
});
