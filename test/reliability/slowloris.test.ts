/**
 * Reliability case 1 — slowloris. Many connections from 50 source addresses that send nothing, or
 * drip one byte at a time, against a listener with tcp.read_timeout and max_connections_per_ip.
 *
 * Pass criteria:
 * - every slow connection is closed at read_timeout ±10 % after its last byte (silent ones: after
 *   connecting), and never while it is still dripping (a byte every 10 s, or 0.8 × read_timeout);
 * - per-IP limit: each address gets exactly max_connections_per_ip connections; its next attempt
 *   is refused (reset, logged as connection_limit) while they are open;
 * - a normal client (127.0.0.1) is served while every slow connection is open;
 * - the child's RSS stays under the stated budget (RSS_BUDGET) with all of them open.
 */
import test from 'ava';
import net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { startDaemon } from '../helpers/daemon.js';
import { connectionLines, denyLines } from '../helpers/log-lines.js';
import { startEchoServer } from '../helpers/servers.js';
import { attempt } from '../helpers/tcp-clients.js';
import { waitFor } from '../helpers/wait-for.js';
import { summary } from '../helpers/reliability/clients.js';
import { tcpListener } from '../helpers/reliability/config.js';
import { fdCount, rss } from '../helpers/reliability/proc.js';
import { lateBound, mib, MiB, size } from '../helpers/reliability/scale.js';
import { loopbackSource } from '../helpers/reliability/sources.js';

const SOURCES = 50;
const PER_SOURCE = size(10, 40);
const CONNECTIONS = SOURCES * PER_SOURCE;
const READ_TIMEOUT_MS = size(3000, 15_000);
/** The drippers send a byte every 0.8 × read_timeout (at most 10 s: full size, 1 byte per 10 s), three times. */
const DRIP_MS = Math.min(10_000, READ_TIMEOUT_MS * 0.8);
const DRIPS = 3;
/** The child's RSS with every slow connection open: a fixed budget, stated here and in docs/reliability.md. */
const RSS_BUDGET = 150 * MiB;

interface Slow {
  readonly socket: net.Socket;
  lastByteAt: number;
  closedAt: number;
  localPort: number;
  dripping: boolean;
}

function openSlow(port: number, localAddress: string, drip: boolean): Promise<Slow> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    const slow: Slow = { socket, lastByteAt: 0, closedAt: 0, localPort: 0, dripping: drip };
    socket.on('data', () => {});
    socket.on('error', () => {});
    socket.once('close', () => (slow.closedAt = performance.now()));
    socket.once('connect', () => {
      slow.lastByteAt = performance.now();
      slow.localPort = socket.localPort ?? 0;
      resolve(slow);
      if (!drip) return;
      let sent = 0;
      const next = (): void => {
        if (socket.destroyed) return;
        socket.write('x');
        slow.lastByteAt = performance.now();
        if (++sent < DRIPS) setTimeout(next, DRIP_MS).unref();
        else slow.dripping = false;
      };
      next();
    });
    socket.once('error', reject);
  });
}

test.serial(`slowloris: ${CONNECTIONS} slow connections from ${SOURCES} addresses closed at read_timeout ±10 %, per-IP limit held, a normal client served, child RSS under ${mib(RSS_BUDGET)}`, async (t) => {
  t.timeout(size(120_000, 300_000));
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, {
    'conf.d/slow.yaml': tcpListener(
      `127.0.0.1:${echo}`,
      `rate_limits:\n  max_connections_per_ip: ${PER_SOURCE}\ntcp:\n  read_timeout: "${READ_TIMEOUT_MS}ms"\n`,
    ),
  });
  const port = await daemon.port('slow');
  const pid = await daemon.childPid('slow');
  const baseRss = rss(pid);
  const baseFds = fdCount(pid);

  // Half silent, half dripping, spread over the addresses; opened in waves to keep the backlog sane.
  const slow: Slow[] = [];
  // The next wave waits until the child has taken the previous one (its descriptors), so a client's
  // clock and the relay's start together instead of drifting apart by a growing accept queue.
  t.teardown(() => slow.forEach((s) => s.socket.destroy()));
  for (let wave = 0; wave < PER_SOURCE; wave++) {
    slow.push(...(await Promise.all(Array.from({ length: SOURCES }, (_, s) => openSlow(port, loopbackSource(s), (wave + s) % 2 === 0)))));
    await waitFor(() => fdCount(pid) >= baseFds + 2 * slow.length, `the child to hold ${slow.length} relays (client and target sockets)`, 30_000);
  }
  const heldRss = rss(pid);
  const heldFds = fdCount(pid);

  // The per-IP limit: every address is at its limit, so its next attempt is refused.
  const extra = await Promise.all(Array.from({ length: SOURCES }, (_, s) => attempt(t, port, { localAddress: loopbackSource(s) })));
  t.is(extra.filter((s) => s !== null).length, 0, 'an address got more than max_connections_per_ip');
  await waitFor(() => denyLines(daemon, 'slow', 'connection_limit').length >= 1, 'a connection_limit deny line');

  // A normal client is served while all of them are held.
  const normalStart = performance.now();
  const normal = await attempt(t, port);
  const normalMs = performance.now() - normalStart;
  t.truthy(normal, 'the normal client was refused');
  normal?.destroy();
  t.true(slow.every((s) => s.closedAt === 0), 'a slow connection was closed before the normal client was served');

  await waitFor(() => slow.every((s) => s.closedAt > 0), 'every slow connection to be closed', READ_TIMEOUT_MS * 2 + DRIP_MS * DRIPS + 10_000);
  const silent = slow.filter((_, i) => !isDripper(i)).map((s) => s.closedAt - s.lastByteAt);
  const drippers = slow.filter((_, i) => isDripper(i)).map((s) => s.closedAt - s.lastByteAt);
  t.log(`${CONNECTIONS} connections, read_timeout ${READ_TIMEOUT_MS} ms`);
  t.log(`silent: closed after (ms) ${summary(silent)}`);
  t.log(`dripping (1 byte every ${DRIP_MS} ms, ${DRIPS} bytes): closed after last byte (ms) ${summary(drippers)}`);
  t.log(`normal client served in ${normalMs.toFixed(1)} ms while ${CONNECTIONS} were held; ${SOURCES} extra attempts refused`);
  t.log(`child RSS ${mib(baseRss)} → ${mib(heldRss)} with ${CONNECTIONS} open (${((heldRss - baseRss) / CONNECTIONS / 1024).toFixed(1)} KiB each); fds ${baseFds} → ${heldFds}`);
  const durations = connectionLines(daemon, "closed", "slow").filter((l) => l.includes("bytes_sent=0 ")).map((l) => Number(/duration=(\d+)ms/.exec(l)![1]));
  t.log(`silent, as the child measured them (close event duration=, from accept): ${summary(durations)}`);
  const all = [...silent, ...drippers];
  t.true(Math.min(...all) >= READ_TIMEOUT_MS * 0.9, `closed early: ${summary(all)}`);
  t.true(Math.max(...all) <= lateBound(READ_TIMEOUT_MS * 1.1), `closed late: ${summary(all)}`);
  t.true(heldRss <= RSS_BUDGET, `child RSS ${mib(heldRss)}`);
  await waitFor(() => fdCount(pid) <= baseFds || undefined, `child fds back to ${baseFds} (now ${fdCount(pid)})`);

  function isDripper(i: number): boolean {
    const wave = Math.floor(i / SOURCES);
    return (wave + (i % SOURCES)) % 2 === 0;
  }
  await delay(0);
});
