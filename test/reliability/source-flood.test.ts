/**
 * Reliability case 7 — source flood: SOURCES distinct client addresses (127.1.0.1 onwards, all of
 * 127.0.0.0/8 being loopback), one datagram or one connection each, against listeners with per-IP
 * limits, while a few active clients keep working.
 *
 * Pass criteria:
 * - per-IP state stays bounded: the child's RSS during the flood stays under FLOOD_RSS_BOUND (the
 *   limiter keeps at most 100,000 addresses, ~0.8 KB each);
 * - limits still hold for the active sources: each, opening a new UDP session every 100 ms during
 *   the flood, gets at most max_connection_attempts_per_ip per window, the rest refused and logged
 *   as attempt_limit;
 * - the state is swept: once the windows have passed, memory returns near its baseline (within
 *   SETTLE_MARGIN of the RSS before the flood) and new addresses are admitted again;
 * - TCP: every flood connection is refused by max_total_connections without reaching the target,
 *   while the one admitted connection keeps working; RSS bounded (and, in the full run, back near
 *   its baseline).
 */
import test from 'ava';
import dgram from 'node:dgram';
import net from 'node:net';
import { startDaemon } from '../helpers/daemon.js';
import { waitForDeny } from '../helpers/log-lines.js';
import { waitForSample } from '../helpers/metrics.js';
import { startCountingEchoServer } from '../helpers/servers.js';
import { udpClient } from '../helpers/udp.js';
import { waitFor } from '../helpers/wait-for.js';
import { mainFile, tcpListener, udpListener } from './helpers/config.js';
import { rss, sampler } from './helpers/proc.js';
import { FULL, mib, MiB, size } from './helpers/scale.js';
import { loopbackSource } from './helpers/sources.js';

const SOURCES = size(10_000, 100_000);
const WINDOW_S = size(5, 20);
const FLOOD_RSS_BOUND = size(200, 400) * MiB;
const SETTLE_MARGIN = 0.25;
const ACTIVE = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6'];
const ATTEMPTS = 3;

/** One datagram from each of `count` addresses starting at `first`, `parallel` sockets at a time. */
async function udpFlood(port: number, first: number, count: number, parallel = 256): Promise<void> {
  const payload = Buffer.from('flood');
  for (let base = first; base < first + count; base += parallel) {
    await Promise.all(
      Array.from({ length: Math.min(parallel, first + count - base) }, (_, k) =>
        new Promise<void>((resolve) => {
          const socket = dgram.createSocket('udp4');
          socket.on('error', () => resolve());
          socket.bind(0, loopbackSource(base + k), () => socket.send(payload, port, '127.0.0.1', () => socket.close(() => resolve())));
        }),
      ),
    );
  }
}

test.serial(`source flood, UDP: ${SOURCES} distinct sources — per-IP state bounded and swept, limits hold for active sources, memory back near baseline`, async (t) => {
  t.timeout(size(180_000, 900_000));
  // A backend that never answers: the flood's sessions simply idle out.
  const sink = dgram.createSocket('udp4');
  sink.on('message', () => {});
  await new Promise<void>((resolve) => sink.bind(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => sink.close(() => resolve())));
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile({ metrics: true }),
    'conf.d/flood.yaml': udpListener(
      `127.0.0.1:${sink.address().port}`,
      `rate_limits:\n  max_connection_attempts_per_ip: ${ATTEMPTS}\n  attempts_window: "${WINDOW_S}s"\n  max_total_connections: 20000\nudp:\n  session_timeout: "1s"\n`,
    ),
  });
  const port = await daemon.port('flood');
  const pid = await daemon.childPid('flood');
  const before = rss(pid);
  const memory = sampler(() => rss(pid), 250);

  const started = performance.now();
  let flooding = true;
  const flood = udpFlood(port, 0, SOURCES).finally(() => (flooding = false));
  // Meanwhile each active source opens a new session (a new source port) every 100 ms. Under the
  // flood some of their datagrams are lost in the kernel (the listening socket's receive buffer
  // overflows), so the check is on what arrived: never more than ATTEMPTS sessions per window.
  let activeSent = 0;
  const active = (async () => {
    while (flooding || activeSent < ACTIVE.length * 10) {
      await Promise.all(ACTIVE.map(async (ip) => (await udpClient(t, port, { localAddress: ip })).send('active')));
      activeSent += ACTIVE.length;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  await flood;
  await active;
  const floodSeconds = (performance.now() - started) / 1000;
  for (const ip of ACTIVE) await waitForDeny(daemon, 'flood', 'attempt_limit', ip, 30_000);
  const refusedActive = await waitForSample(daemon, 'packetpony_rate_limit_drops_total', { listener: 'flood', reason: 'attempt_limit' }, ACTIVE.length);
  const peak = memory.max;
  const sessions = await waitForSample(daemon, 'packetpony_connections_total', { listener: 'flood', protocol: 'udp', status: 'accepted' }, 1);
  t.log(`${SOURCES} sources flooded in ${floodSeconds.toFixed(1)} s (${(SOURCES / floodSeconds).toFixed(0)}/s); sessions accepted ${sessions}; refused as attempt_limit ${refusedActive}`);
  t.log(`child RSS: ${mib(before)} before, peak ${mib(peak)} during the flood`);
  t.true(peak < FLOOD_RSS_BOUND, `peak RSS ${mib(peak)}`);
  // The active sources: at most ATTEMPTS sessions per window each, the rest refused and logged.
  const opened = daemon.lines.filter((l) => l.includes('Connection opened: listener=flood'));
  const allowed = ATTEMPTS * (Math.ceil(floodSeconds / WINDOW_S) + 1);
  const perActive = ACTIVE.map((ip) => opened.filter((l) => l.includes(`src=${ip}:`)).length);
  t.log(`active sources sent ${activeSent / ACTIVE.length} new sessions each in ${floodSeconds.toFixed(1)} s; admitted ${perActive.join(', ')} (at most ${allowed}: ${ATTEMPTS} per ${WINDOW_S} s window)`);
  for (const n of perActive) t.true(n >= 1 && n <= allowed, `${n} sessions admitted`);

  // Windows pass and the sweep (a bounded slice per second) drops the state; V8 gives memory back.
  const settled = await waitFor(() => {
    const now = rss(pid);
    return now <= before * (1 + SETTLE_MARGIN) ? now : undefined;
  }, `child RSS back within ${SETTLE_MARGIN * 100} % of ${mib(before)}`, size(90_000, 300_000)).catch(() => rss(pid));
  const settleSeconds = (performance.now() - started) / 1000 - floodSeconds;
  memory.stop();
  t.log(`child RSS every 5 s from the start of the flood (MiB): ${memory.samples.filter((_, i) => i % 20 === 0).map((b) => (b / MiB).toFixed(0)).join(' ')}`);
  t.log(`child RSS ${mib(settled)} ${settleSeconds.toFixed(0)} s after the flood (before: ${mib(before)}, bound ${mib(before * (1 + SETTLE_MARGIN))})`);
  t.true(settled <= before * (1 + SETTLE_MARGIN), `RSS ${mib(settled)} after the flood`);
  // New addresses are admitted again (at the full size the flood filled the 100,000 ceiling).
  const late = await udpClient(t, port, { localAddress: loopbackSource(SOURCES + 10) });
  late.send('late');
  await daemon.waitForLine(new RegExp(`Connection opened: listener=flood protocol=udp src=${loopbackSource(SOURCES + 10).replace(/\./g, '\\.')}:`), 10_000);
  if (FULL) t.log('after the sweep a new address was admitted again');
});

test.serial(`source flood, TCP: ${size(5000, 100_000)} distinct sources against max_total_connections — all refused, none reaches the target, the admitted client keeps working${FULL ? ', memory back near baseline' : ''}`, async (t) => {
  t.timeout(size(180_000, 900_000));
  const count = size(5000, 100_000);
  const backend = await startCountingEchoServer(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile({ metrics: true }),
    'conf.d/tflood.yaml': tcpListener(`127.0.0.1:${backend.port}`, `rate_limits:\n  max_total_connections: 1\n  max_connection_attempts_per_ip: 100\n  attempts_window: "${WINDOW_S}s"\n`),
  });
  const port = await daemon.port('tflood');
  const pid = await daemon.childPid('tflood');
  const holder = net.connect(port, '127.0.0.1');
  t.teardown(() => void holder.destroy());
  const echo = (text: string): Promise<string> => new Promise((resolve) => {
    holder.once('data', (d: Buffer) => resolve(d.toString()));
    holder.write(text);
  });
  t.is(await echo('hold'), 'hold');
  const before = rss(pid);
  const memory = sampler(() => rss(pid), 250);
  const started = performance.now();
  let refused = 0;
  for (let base = 0; base < count; base += 200) {
    const outcomes = await Promise.all(Array.from({ length: Math.min(200, count - base) }, (_, k) => new Promise<string>((resolve) => {
      const socket = net.connect({ port, host: '127.0.0.1', localAddress: loopbackSource(base + k) });
      socket.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      socket.on('close', () => resolve('closed'));
      socket.on('data', () => resolve('served'));
      socket.on('connect', () => socket.write('x'));
    })));
    refused += outcomes.filter((o) => o !== 'served').length;
  }
  const seconds = (performance.now() - started) / 1000;
  t.is(await echo('still here'), 'still here');
  const counted = await waitForSample(daemon, 'packetpony_rate_limit_drops_total', { listener: 'tflood', reason: 'total_limit' }, count, 30_000);
  const peak = memory.max;
  t.log(`${count} sources in ${seconds.toFixed(1)} s: ${refused} refused (${counted} counted as total_limit); the target accepted ${backend.accepted()} connection(s); child RSS ${mib(before)} → peak ${mib(peak)}`);
  t.is(refused, count);
  t.is(backend.accepted(), 1);
  t.true(peak < FLOOD_RSS_BOUND, `peak RSS ${mib(peak)}`);
  // The return to baseline takes V8 half a minute of idleness (the UDP case shows it in CI); the
  // full run checks it here too.
  if (FULL) {
    const settled = await waitFor(() => {
      const now = rss(pid);
      return now <= before * (1 + SETTLE_MARGIN) ? now : undefined;
    }, 'child RSS back near its baseline', 300_000).catch(() => rss(pid));
    t.log(`child RSS ${mib(settled)} after the flood (before ${mib(before)})`);
    t.true(settled <= before * (1 + SETTLE_MARGIN), `RSS ${mib(settled)}`);
  }
  memory.stop();
  const denyLines = daemon.lines.filter((l) => l.includes('Connection denied: listener=tflood')).length;
  t.log(`deny lines: ${denyLines} for ${count} refusals (at most 10,000 sources per 10 s are listed, the rest summed)`);
});
