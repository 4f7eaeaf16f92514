/** The HTTP endpoints, in-process on loopback. */
import test from 'ava';
import net from 'node:net';
import type { ExecutionContext } from 'ava';
import type { PrometheusSettings } from '../../../src/config/types.js';
import { PacketPonyError } from '../../../src/errors.js';
import { MetricsServer, notReady, type NotReady } from '../../../src/supervisor/metrics-server.js';
import { Logger } from '../../../src/telemetry/logger.js';
import { Metrics } from '../../../src/telemetry/metrics/metrics.js';
import { ListenerStats } from '../../../src/telemetry/stats.js';
import { waitFor } from '../../helpers/wait-for.js';

const HEALTHY = '{"status":"healthy","service":"packetpony"}';

function settings(port = 0, path = '/metrics', host = '127.0.0.1'): PrometheusSettings {
  return { enabled: true, listen_address: `${host}:${port}`, listen: { host, port }, path };
}

async function start(t: ExecutionContext, waiting: NotReady[] = [], metrics = new Metrics(() => [])) {
  const server = new MetricsServer({ metrics, notReady: () => waiting, logger: new Logger([]) });
  t.teardown(() => server.close());
  await server.apply(settings());
  return { server, port: server.address!.port, metrics };
}

async function get(port: number, path: string, method = 'GET') {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  return { status: response.status, type: response.headers.get('content-type'), body: await response.text(), headers: response.headers };
}

/** Sends raw bytes and returns everything the server answers until it closes. */
function raw(port: number, request: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
    socket.on('close', () => resolve(answer));
    socket.on('error', reject);
    socket.write(request);
  });
}

test('/health and /healthz: 200 with the original body, as JSON', async (t) => {
  const { port } = await start(t, [{ listener: 'web', state: 'binding', reason: 'x' }]);
  for (const path of ['/health', '/healthz', '/health?probe=1']) {
    const r = await get(port, path);
    t.is(r.status, 200, path);
    t.is(r.type, 'application/json');
    t.is(r.body, HEALTHY);
  }
});

test('/ready: 200 with the same body when every listener serves, else 503 naming which and why', async (t) => {
  const waiting: NotReady[] = [];
  const { port } = await start(t, waiting);
  let r = await get(port, '/ready');
  t.is(r.status, 200);
  t.is(r.body, HEALTHY);
  waiting.push({ listener: 'web', state: 'binding', reason: 'cannot bind 127.0.0.1:8080 yet; retrying' });
  r = await get(port, '/ready');
  t.is(r.status, 503);
  t.is(r.type, 'application/json');
  t.deepEqual(JSON.parse(r.body), { status: 'not ready', service: 'packetpony', not_ready: waiting });
});

test('the metrics path serves the registry in the Prometheus text format', async (t) => {
  const metrics = new Metrics(() => [{ name: 'web', config: { protocol: 'tcp' }, state: 'ready', workerPids: new Map() }]);
  const stats = new ListenerStats();
  stats.accepted = 5;
  metrics.report('web', { stats: stats.takeDelta(), dropped_events: 0 }, 1);
  const { port } = await start(t, [], metrics);
  const r = await get(port, '/metrics');
  t.is(r.status, 200);
  t.is(r.type, 'text/plain; version=0.0.4; charset=utf-8');
  t.true(r.body.includes('packetpony_connections_total{listener="web",protocol="tcp",status="accepted"} 5\n'));
});

test('HEAD answers headers only; other methods 405; unknown paths 404', async (t) => {
  const { port } = await start(t);
  const head = await get(port, '/health', 'HEAD');
  t.is(head.status, 200);
  t.is(head.body, '');
  t.is(head.headers.get('content-length'), String(HEALTHY.length));
  const post = await get(port, '/metrics', 'POST');
  t.is(post.status, 405);
  t.is(post.headers.get('allow'), 'GET, HEAD');
  const missing = await get(port, '/admin');
  t.is(missing.status, 404);
  t.is(missing.type, 'application/json');
  t.is((await get(port, '/metrics/')).status, 404, 'paths match exactly');
});

test('oversized headers get 431, garbage gets 400, and the connection is closed', async (t) => {
  const { port } = await start(t);
  t.regex(await raw(port, `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(16 * 1024)}\r\n\r\n`), /^HTTP\/1\.1 431 /);
  t.regex(await raw(port, 'NOT HTTP AT ALL\r\n\r\n'), /^HTTP\/1\.1 400 /);
  t.regex(await raw(port, Buffer.from([0, 1, 2, 255, 13, 10, 13, 10])), /^HTTP\/1\.1 400 /);
});

test('a client that never finishes its headers is disconnected', async (t) => {
  const { port } = await start(t);
  const socket = net.connect(port, '127.0.0.1');
  t.teardown(() => socket.destroy());
  let closed = false;
  socket.on('close', () => (closed = true));
  socket.on('error', () => {});
  let answer = '';
  socket.on('data', (d: Buffer) => (answer += d.toString()));
  socket.write('GET /metrics HTTP/1.1\r\nHost: x\r\n');
  await waitFor(() => closed, 'the server to close the slow connection', 20_000);
  t.regex(answer, /^HTTP\/1\.1 408 /);
});

test('a request carrying a body is answered and its connection closed, the body never read', async (t) => {
  const { port } = await start(t);
  const answer = await raw(port, 'GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello');
  t.regex(answer, /^HTTP\/1\.1 200 /);
  t.regex(answer, /\r\nConnection: close\r\n/i);
});

test('an address in use is a MetricsListenError naming it', async (t) => {
  const { port } = await start(t);
  const other = new MetricsServer({ metrics: new Metrics(() => []), notReady: () => [], logger: new Logger([]) });
  const error = await t.throwsAsync(other.apply(settings(port)), { instanceOf: PacketPonyError });
  t.is((error as PacketPonyError).code, 'PP_ERR_METRICS_LISTEN');
  t.regex(error!.message, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} \\(metrics\\.prometheus\\.listen_address\\): EADDRINUSE`));
});

test('moving to a new address keeps the registry; a move that cannot bind keeps the old address', async (t) => {
  const metrics = new Metrics(() => []);
  metrics.configReloaded('ok');
  const { server, port } = await start(t, [], metrics);
  await server.moveTo({ host: '127.0.0.1', port: 0 });
  await server.apply(settings(0, '/prom'));
  const moved = server.address!.port;
  t.not(moved, port);
  await t.throwsAsync(fetch(`http://127.0.0.1:${port}/health`));
  const r = await get(moved, '/prom');
  t.true(r.body.includes('packetpony_config_reloads_total{result="ok"} 1'));
  t.is((await get(moved, '/metrics')).status, 404, 'the path changed too');

  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  t.teardown(() => blocker.close());
  await t.throwsAsync(server.moveTo({ host: '127.0.0.1', port: (blocker.address() as net.AddressInfo).port }), { message: /EADDRINUSE/ });
  t.is((await get(moved, '/health')).status, 200, 'still serving where it was');

  await server.apply({ ...settings(), enabled: false });
  t.is(server.address, undefined);
});

test('notReady names each listener that is not serving, and why', (t) => {
  const configured = [
    { name: 'a', listen_address: '0.0.0.0:80' },
    { name: 'b', listen_address: '0.0.0.0:81' },
    { name: 'c', listen_address: '0.0.0.0:82' },
    { name: 'd', listen_address: '0.0.0.0:83' },
  ];
  const running = [
    { name: 'a', state: 'ready', config: { listen_address: '0.0.0.0:80' } },
    { name: 'b', state: 'binding', config: { listen_address: '0.0.0.0:81' } },
    { name: 'c', state: 'backoff', config: { listen_address: '0.0.0.0:82' } },
  ];
  t.deepEqual(notReady(configured, running), [
    { listener: 'b', state: 'binding', reason: 'cannot bind 0.0.0.0:81 yet; retrying' },
    { listener: 'c', state: 'backoff', reason: 'its child process died; restarting' },
    { listener: 'd', state: 'stopped', reason: 'not started yet' },
  ]);
  t.deepEqual(notReady([], []), []);
});
