/**
 * Reliability case 12 — hostile HTTP on the metrics port: slow headers (slowloris) from four
 * addresses, far more connections than the server takes (64), oversized headers, garbage.
 *
 * Pass criteria, while the attack runs:
 * - every scrape of /metrics and /ready is answered (200) within SCRAPE_DEADLINE_MS — Prometheus
 *   gives a scrape 10 s by default; we ask for a fifth of that;
 * - oversized headers are answered 431 and garbage 400, each connection then closed;
 * - proxying is unaffected: every echo through a listener comes back;
 * - afterwards the supervisor's descriptors return to their baseline.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { startDaemon } from '../helpers/daemon.js';
import { startEchoServer } from '../helpers/servers.js';
import { attempt, hangUp } from '../helpers/tcp-clients.js';
import { waitFor } from '../helpers/wait-for.js';
import { summary } from '../helpers/reliability/clients.js';
import { mainFile, tcpListener } from '../helpers/reliability/config.js';
import { fdCount } from '../helpers/reliability/proc.js';
import { size } from '../helpers/reliability/scale.js';

const SCRAPE_DEADLINE_MS = 2000;
const SLOW_CONNECTIONS = size(200, 1000);
const ATTACK_MS = size(8000, 30_000);
/** The attack comes from four addresses; the scraper is 127.0.0.1, as Prometheus has its own. */
const ATTACKERS = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'];

async function metricsPort(daemon: Awaited<ReturnType<typeof startDaemon>>): Promise<number> {
  const line = await daemon.waitForLine(/metrics server started address=\S+:\d+/);
  return Number(/address=\S+:(\d+)/.exec(line)![1]);
}

/** One raw exchange: sends `request`, resolves with what came back until the server closed (or the deadline). */
function raw(port: number, request: Buffer | string, deadlineMs: number): Promise<{ response: string; closed: boolean; ms: number }> {
  return new Promise((resolve) => {
    const started = performance.now();
    const socket = net.connect(port, '127.0.0.1');
    let response = '';
    const timer = setTimeout(() => finish(false), deadlineMs);
    const finish = (closed: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ response, closed, ms: performance.now() - started });
    };
    socket.on('error', () => finish(true));
    socket.on('data', (chunk: Buffer) => (response += chunk.toString('latin1')));
    socket.on('close', () => finish(true));
    socket.on('connect', () => socket.write(request));
  });
}

/** A GET with a deadline; resolves with the status (0: no answer in time or refused) and the time taken. */
async function get(port: number, path: string): Promise<{ status: number; ms: number }> {
  const { response, ms } = await raw(port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, SCRAPE_DEADLINE_MS);
  const status = /^HTTP\/1\.1 (\d{3})/.exec(response)?.[1];
  return { status: status === undefined ? 0 : Number(status), ms };
}

/** A slowloris client: a request line and then a header byte now and then, never the blank line. */
function slowHeaders(port: number, sockets: Set<net.Socket>, localAddress: string): void {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress });
  sockets.add(socket);
  socket.on('error', () => {});
  socket.on('close', () => sockets.delete(socket));
  socket.on('connect', () => {
    socket.write('GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    const drip = setInterval(() => (socket.destroyed ? clearInterval(drip) : socket.write('a')), 500);
    drip.unref();
  });
}

test.serial(`hostile HTTP: ${SLOW_CONNECTIONS} slow-header connections kept up for ${ATTACK_MS / 1000} s, oversized headers, garbage — every scrape answered within ${SCRAPE_DEADLINE_MS} ms, proxying unaffected`, async (t) => {
  t.timeout(ATTACK_MS + 60_000);
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, { 'packetpony.yaml': mainFile({ metrics: true }), 'conf.d/web.yaml': tcpListener(`127.0.0.1:${echo}`) });
  const port = await metricsPort(daemon);
  const proxyPort = await daemon.port('web');
  t.is((await get(port, '/ready')).status, 200);
  const baseline = fdCount(daemon.pid);

  // Oversized headers and garbage: answered and closed.
  const oversized = await raw(port, `GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(64 * 1024)}\r\n\r\n`, 5000);
  t.regex(oversized.response, /^HTTP\/1\.1 431 /);
  t.true(oversized.closed);
  const garbage = await raw(port, randomBytes(4096), 5000);
  t.regex(garbage.response, /^HTTP\/1\.1 400 /);
  t.true(garbage.closed);
  const manyHeaders = await raw(port, `GET /metrics HTTP/1.1\r\n${Array.from({ length: 2000 }, (_, i) => `X-${i}: y\r\n`).join('')}\r\n`, 5000);
  t.regex(manyHeaders.response, /^HTTP\/1\.1 (431|400) /);

  // The slowloris: kept at SLOW_CONNECTIONS for the whole attack (a closed one is reopened).
  const sockets = new Set<net.Socket>();
  t.teardown(() => sockets.forEach((s) => s.destroy()));
  let opened = 0;
  const refill = setInterval(() => {
    while (sockets.size < SLOW_CONNECTIONS) {
      slowHeaders(port, sockets, ATTACKERS[opened % ATTACKERS.length]!);
      opened++;
    }
  }, 50);
  t.teardown(() => clearInterval(refill));

  const scrapes: Array<{ status: number; ms: number }> = [];
  const echoes: boolean[] = [];
  const junk: Array<{ response: string }> = [];
  const end = Date.now() + ATTACK_MS;
  while (Date.now() < end) {
    const [metrics, ready, proxied, big, noise] = await Promise.all([
      get(port, '/metrics'),
      get(port, '/ready'),
      attempt(t, proxyPort),
      raw(port, `GET / HTTP/1.1\r\nX-Big: ${'b'.repeat(16 * 1024)}\r\n\r\n`, 5000),
      raw(port, randomBytes(512), 5000),
    ]);
    scrapes.push(metrics, ready);
    echoes.push(proxied !== null);
    if (proxied) await hangUp(proxied);
    junk.push(big, noise);
  }
  clearInterval(refill);
  const failed = scrapes.filter((s) => s.status !== 200);
  t.log(`${opened} slow-header connections opened in ${ATTACK_MS / 1000} s (${SLOW_CONNECTIONS} kept open at once)`);
  t.log(`scrapes during the attack: ${scrapes.length}, not answered 200 in time: ${failed.length}; time (ms) ${summary(scrapes.map((s) => s.ms))}`);
  t.log(`proxied echoes during the attack: ${echoes.filter(Boolean).length}/${echoes.length}`);
  t.is(failed.length, 0, `${failed.length} scrapes failed (status 0: refused or no answer in time)`);
  t.true(echoes.every(Boolean));
  t.true(junk.every((j) => /^HTTP\/1\.1 (4\d\d) /.test(j.response) || j.response === ''), 'a junk request got something other than a 4xx');

  for (const socket of sockets) socket.destroy();
  await waitFor(() => fdCount(daemon.pid) <= baseline || undefined, `supervisor fds back to ${baseline} (now ${fdCount(daemon.pid)})`, 10_000);
  t.is((await get(port, '/metrics')).status, 200);
});
