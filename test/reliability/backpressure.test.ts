/**
 * Reliability case 4 — backpressure. TOTAL bytes uploaded to a backend that reads 1 MiB/s, and
 * downloaded by a client that reads 1 MiB/s. The slow reader reads at 1 MiB/s for SLOW_SECONDS,
 * then at full speed for the rest, so that the whole TOTAL still arrives within the run (set
 * PP_BACKPRESSURE_SLOW_S=1024 with PP_RELIABILITY=full for the literal 1 GiB at 1 MiB/s).
 *
 * Pass criteria:
 * - the child's memory stays bounded: its RSS never exceeds its RSS before the transfer by more
 *   than RSS_BOUND (the relay holds one buffer of at most 1 MiB per direction; the rest waits in
 *   the kernel's socket buffers, which the sender feels as backpressure);
 * - the bytes in flight (sent by the sender, not yet read by the slow reader) stay bounded too:
 *   kernel buffers only, far below TOTAL;
 * - nothing is dropped: sha256 and byte count of what arrives equal what was sent.
 */
import test from 'ava';
import net from 'node:net';
import { startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/wait-for.js';
import { tcpListener } from '../helpers/reliability/config.js';
import { rss, sampler } from '../helpers/reliability/proc.js';
import { GiB, mib, MiB, size } from '../helpers/reliability/scale.js';
import { receiveStream, sendStream, startStreamServer, throttleReads } from '../helpers/reliability/streams.js';

const TOTAL = size(64 * MiB, GiB);
const SLOW_RATE = MiB;
const SLOW_SECONDS = Number(process.env.PP_BACKPRESSURE_SLOW_S ?? size(5, 120));
const RSS_BOUND = 16 * MiB;

test.serial(`backpressure, upload: ${mib(TOTAL)} to a backend reading 1 MiB/s for ${SLOW_SECONDS} s — child RSS within +${mib(RSS_BOUND)}, nothing lost`, async (t) => {
  t.timeout((SLOW_SECONDS + size(60, 600)) * 1000);
  let reader: ReturnType<typeof throttleReads> | undefined;
  const backend = await startStreamServer(t, { onConnection: (socket) => (reader = throttleReads(socket, SLOW_RATE)) });
  t.teardown(() => reader?.stop());
  const daemon = await startDaemon(t, { 'conf.d/up.yaml': tcpListener(`127.0.0.1:${backend.port}`) });
  const port = await daemon.port('up');
  const pid = await daemon.childPid('up');
  const before = rss(pid);
  const memory = sampler(() => rss(pid), 100);

  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  t.teardown(() => void socket.destroy());
  socket.resume();
  const sending = sendStream(socket, TOTAL, 'upload');
  await waitFor(() => backend.connections[0], 'the backend connection');
  const atBackend = backend.connections[0]!;
  let backendRead = 0;
  atBackend.socket.on('data', (chunk: Buffer) => (backendRead += chunk.length));
  const inFlight = sampler(() => socket.bytesWritten - backendRead, 100);
  await waitFor(() => backendRead >= SLOW_RATE * SLOW_SECONDS || undefined, `${SLOW_SECONDS} s of slow reading`, (SLOW_SECONDS + 30) * 1000);
  const slowPeak = memory.max;
  const slowInFlight = inFlight.max;
  reader!.setRate(Infinity);
  const sent = await sending;
  const received = await atBackend.received;
  const peak = memory.stop();
  inFlight.stop();
  t.log(`upload: backend read ${mib(SLOW_RATE * SLOW_SECONDS)} at 1 MiB/s, then the rest at full speed; ${mib(received.bytes)} arrived`);
  t.log(`child RSS ${mib(before)} before; peak ${mib(slowPeak)} while the backend was slow, ${mib(peak)} overall (+${mib(peak - before)})`);
  t.log(`bytes in flight (sent, not yet read by the backend) while it was slow: at most ${mib(slowInFlight)}`);
  t.is(received.bytes, TOTAL);
  t.is(received.sha256, sent.sha256);
  t.is(received.end, 'end');
  t.true(peak - before <= RSS_BOUND, `child RSS grew by ${mib(peak - before)}`);
  t.true(slowInFlight < 32 * MiB, `${mib(slowInFlight)} in flight`);
});

test.serial(`backpressure, download: ${mib(TOTAL)} to a client reading 1 MiB/s for ${SLOW_SECONDS} s — child RSS within +${mib(RSS_BOUND)}, nothing lost`, async (t) => {
  t.timeout((SLOW_SECONDS + size(60, 600)) * 1000);
  const backend = await startStreamServer(t, { sendBytes: TOTAL, seedFor: () => 'download' });
  const daemon = await startDaemon(t, { 'conf.d/down.yaml': tcpListener(`127.0.0.1:${backend.port}`) });
  const port = await daemon.port('down');
  const pid = await daemon.childPid('down');
  const before = rss(pid);
  const memory = sampler(() => rss(pid), 100);

  const socket = net.connect({ port, host: '127.0.0.1' });
  t.teardown(() => void socket.destroy());
  const received = receiveStream(socket);
  const reader = throttleReads(socket, SLOW_RATE);
  t.teardown(() => reader.stop());
  let clientRead = 0;
  socket.on('data', (chunk: Buffer) => (clientRead += chunk.length));
  await waitFor(() => backend.connections[0], 'the backend connection');
  const atBackend = backend.connections[0]!;
  const inFlight = sampler(() => atBackend.socket.bytesWritten - clientRead, 100);
  await waitFor(() => clientRead >= SLOW_RATE * SLOW_SECONDS || undefined, `${SLOW_SECONDS} s of slow reading`, (SLOW_SECONDS + 30) * 1000);
  const slowPeak = memory.max;
  const slowInFlight = inFlight.max;
  reader.setRate(Infinity);
  const got = await received;
  const sent = await atBackend.sent;
  const peak = memory.stop();
  inFlight.stop();
  t.log(`download: client read ${mib(SLOW_RATE * SLOW_SECONDS)} at 1 MiB/s, then the rest at full speed; ${mib(got.bytes)} arrived`);
  t.log(`child RSS ${mib(before)} before; peak ${mib(slowPeak)} while the client was slow, ${mib(peak)} overall (+${mib(peak - before)})`);
  t.log(`bytes in flight (sent by the backend, not yet read by the client) while it was slow: at most ${mib(slowInFlight)}`);
  t.is(got.bytes, TOTAL);
  t.is(got.sha256, sent!.sha256);
  t.is(got.end, 'end');
  t.true(peak - before <= RSS_BOUND, `child RSS grew by ${mib(peak - before)}`);
  t.true(slowInFlight < 32 * MiB, `${mib(slowInFlight)} in flight`);
});
