/**
 * Reliability case 5 — integrity. TOTAL bytes each way at once (client → backend and backend →
 * client), over 1 and over 16 parallel connections, IPv4 and IPv6, every byte pseudo-random.
 *
 * Pass criteria: for every connection, the sha256 of what one end sent equals the sha256 of what
 * the other end received, both ways, byte counts equal, every stream ended normally (FIN); the
 * close events count the same bytes.
 */
import test from 'ava';
import net from 'node:net';
import { startDaemon } from '../helpers/daemon.js';
import { connectionLines } from '../helpers/log-lines.js';
import { waitFor } from '../helpers/wait-for.js';
import { tcpListener } from '../helpers/reliability/config.js';
import { rss, sampler } from '../helpers/reliability/proc.js';
import { GiB, mib, MiB, size } from '../helpers/reliability/scale.js';
import { receiveStream, sendStream, startStreamServer } from '../helpers/reliability/streams.js';

const TOTAL = size(64 * MiB, GiB);

for (const family of ['IPv4', 'IPv6'] as const) {
  for (const connections of [1, 16]) {
    test.serial(`integrity: ${mib(TOTAL)} each way over ${connections} connection(s), ${family} — sha256 equal both ways`, async (t) => {
      t.timeout(size(120_000, 900_000));
      const host = family === 'IPv4' ? '127.0.0.1' : '::1';
      const per = Math.floor(TOTAL / connections);
      const backend = await startStreamServer(t, { host, sendBytes: per, seedFor: (i) => `down-${family}-${i}` });
      const bracketed = family === 'IPv4' ? host : `[${host}]`;
      const daemon = await startDaemon(t, { 'conf.d/bulk.yaml': tcpListener(`${bracketed}:${backend.port}`, '', `${bracketed}:0`) });
      const port = await daemon.port('bulk');
      const pid = await daemon.childPid('bulk');
      const memoryOf = sampler(() => rss(pid), 200);
      const started = performance.now();
      const results = await Promise.all(
        Array.from({ length: connections }, async (_, i) => {
          const socket = net.connect({ port, host, allowHalfOpen: true });
          t.teardown(() => void socket.destroy());
          await new Promise<void>((resolve, reject) => {
            socket.once('connect', resolve);
            socket.once('error', reject);
          });
          const received = receiveStream(socket);
          const sent = await sendStream(socket, per, `up-${family}-${i}`);
          return { sent, received: await received };
        }),
      );
      const seconds = (performance.now() - started) / 1000;
      const peak = memoryOf.stop();
      await waitFor(() => backend.connections.length === connections || undefined, 'every backend connection');
      const atBackend = await Promise.all(backend.connections.map(async (c) => ({ received: await c.received, sent: await c.sent })));

      t.true(results.every((r) => r.received.end === 'end'), JSON.stringify(results.map((r) => r.received.end)));
      t.true(atBackend.every((r) => r.received.end === 'end'), JSON.stringify(atBackend.map((r) => r.received.end)));
      // Up: what each client sent is what some backend connection received (streams differ by seed).
      t.deepEqual(new Set(results.map((r) => r.sent.sha256)), new Set(atBackend.map((r) => r.received.sha256)));
      // Down: what each backend connection sent is what some client received.
      t.deepEqual(new Set(atBackend.map((r) => r.sent!.sha256)), new Set(results.map((r) => r.received.sha256)));
      t.true(results.every((r) => r.received.bytes === per && r.sent.bytes === per));
      const closes = await waitFor(() => (connectionLines(daemon, 'closed', 'bulk').length >= connections ? connectionLines(daemon, 'closed', 'bulk') : undefined), 'the close events');
      t.true(closes.every((l) => l.includes(`bytes_sent=${per} bytes_recv=${per}`) && !l.includes('error=')), closes[0]);
      t.log(`${mib(2 * TOTAL)} through the proxy in ${seconds.toFixed(1)} s (${((2 * TOTAL) / MiB / seconds).toFixed(0)} MiB/s both ways together); child RSS peak ${mib(peak)}`);
    });
  }
}
