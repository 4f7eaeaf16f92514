/**
 * Health checks on real loopback sockets, in process: TCP connect, send/expect, the PROXY protocol
 * header a check sends, UDP probes with and without an answer, and the scheduling (first check at
 * once, fall, rise, recovery probes, stop). Conditions are awaited with deadlines; no timing is
 * asserted.
 */
import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import type { HealthCheckSettings, Protocol, ProxyProtocolVersion } from '../../../src/config/types.js';
import { HealthChecker } from '../../../src/proxy/health-check.js';
import { parseProxyHeader } from '../../../src/proxy/proxy-protocol.js';
import { TargetPool, type TargetStateChange } from '../../../src/proxy/target-pool.js';
import { refusingPort } from '../../helpers/servers.js';
import { startUdpBackend, unreachableUdpPort } from '../../helpers/udp.js';
import { waitFor } from '../../helpers/wait-for.js';

const SETTINGS: HealthCheckSettings = { interval: 20, timeout: 1000, rise: 2, fall: 2, send: '', expect: '' };

/** A TCP server whose connections `handler` serves; closed (with its connections) at teardown. */
async function tcpServer(t: ExecutionContext, handler: (socket: net.Socket) => void = () => {}): Promise<{ port: number; server: net.Server; accepted: () => number }> {
  let accepted = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    handler(socket);
  });
  t.teardown(() => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  }));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, server, accepted: () => accepted };
}

function setup(
  t: ExecutionContext,
  ports: number[],
  options: { protocol?: Protocol; settings?: Partial<HealthCheckSettings> | null; proxyProtocol?: ProxyProtocolVersion } = {},
): { checker: HealthChecker; pool: TargetPool; changes: TargetStateChange[] } {
  const changes: TargetStateChange[] = [];
  const settings = options.settings === null ? null : { ...SETTINGS, ...options.settings };
  const pool = new TargetPool(
    ports.map((port) => ({ address: `127.0.0.1:${port}`, endpoint: { host: '127.0.0.1', port }, backup: false })),
    { balance: 'round_robin', rise: settings?.rise ?? 1, fall: settings?.fall ?? 1, onChange: (c) => changes.push(c) },
  );
  const checker = new HealthChecker({
    pool,
    protocol: options.protocol ?? 'tcp',
    settings,
    proxyProtocol: options.proxyProtocol ?? 'off',
    probeIntervalMs: 20,
    probeTimeoutMs: 1000,
  });
  t.teardown(() => checker.stop());
  return { checker, pool, changes };
}

// ---- single TCP checks ------------------------------------------------------------------------------

test('TCP: a listening port passes, a refusing one fails with the reason', async (t) => {
  const open = await tcpServer(t);
  const closed = await refusingPort(t);
  const { checker, pool } = setup(t, [open.port, closed]);
  t.is(await checker.check(pool.targets[0]!), null);
  t.regex((await checker.check(pool.targets[1]!))!, /ECONNREFUSED/);
});

test('TCP: send, then expect in the answer (even split over several packets)', async (t) => {
  const server = await tcpServer(t, (socket) => {
    socket.once('data', (data) => {
      if (data.toString() === 'PING\r\n') {
        socket.write('+PO');
        setImmediate(() => socket.write('NG and more\r\n'));
      } else socket.end('-ERR\r\n');
    });
  });
  const good = setup(t, [server.port], { settings: { send: 'PING\r\n', expect: 'PONG' } });
  t.is(await good.checker.check(good.pool.targets[0]!), null);
  const bad = setup(t, [server.port], { settings: { send: 'HELLO\r\n', expect: 'PONG' } });
  t.regex((await bad.checker.check(bad.pool.targets[0]!))!, /closed the connection without the expected answer/);
});

test('TCP: a target that never answers fails at the timeout', async (t) => {
  const silent = await tcpServer(t);
  const { checker, pool } = setup(t, [silent.port], { settings: { expect: 'SSH-', timeout: 100 } });
  t.regex((await checker.check(pool.targets[0]!))!, /no answer within 100 ms \(waiting for the expected answer\)/);
});

test('TCP: a server-first banner is matched without sending anything', async (t) => {
  const banner = await tcpServer(t, (socket) => socket.write('SSH-2.0-test\r\n'));
  const { checker, pool } = setup(t, [banner.port], { settings: { expect: 'SSH-2.0' } });
  t.is(await checker.check(pool.targets[0]!), null);
});

for (const version of ['v1', 'v2'] as const) {
  test(`TCP: with proxy_protocol ${version} the check sends a valid header first`, async (t) => {
    const seen: Buffer[] = [];
    const server = await tcpServer(t, (socket) => {
      socket.on('data', (chunk: Buffer) => {
        seen.push(chunk);
        if (Buffer.concat(seen).includes('PING')) socket.write('PONG');
      });
    });
    const { checker, pool } = setup(t, [server.port], { proxyProtocol: version, settings: { send: 'PING', expect: 'PONG' } });
    t.is(await checker.check(pool.targets[0]!), null);
    const received = Buffer.concat(seen);
    const parsed = parseProxyHeader(received);
    if (parsed.kind !== 'header') return t.fail(JSON.stringify(parsed));
    t.is(received.subarray(parsed.length).toString(), 'PING');
    if (version === 'v2') t.deepEqual(parsed.header, { version: 2, source: null, destination: null }, 'LOCAL');
    else t.deepEqual(parsed.header.destination, { ip: '127.0.0.1', port: server.port }, 'the check connection itself');
  });
}

// ---- single UDP checks ------------------------------------------------------------------------------

test('UDP: with send, an answer passes; the wrong answer or none fails', async (t) => {
  const backend = await startUdpBackend(t, { respond: (data) => (data.toString() === 'ping' ? Buffer.from('pong!') : null) });
  const good = setup(t, [backend.port], { protocol: 'udp', settings: { send: 'ping', expect: 'pong' } });
  t.is(await good.checker.check(good.pool.targets[0]!), null);
  const wrong = setup(t, [backend.port], { protocol: 'udp', settings: { send: 'ping', expect: 'PONG', timeout: 100 } });
  t.is(await wrong.checker.check(wrong.pool.targets[0]!), 'no answer within 100 ms');
  const silent = setup(t, [backend.port], { protocol: 'udp', settings: { send: 'hello', timeout: 100 } });
  t.is(await silent.checker.check(silent.pool.targets[0]!), 'no answer within 100 ms');
});

test('UDP: without send, only an ICMP port unreachable fails', async (t) => {
  const backend = await startUdpBackend(t, { respond: () => null });
  const unreachable = await unreachableUdpPort(t);
  const { checker, pool } = setup(t, [backend.port, unreachable.port], { protocol: 'udp', settings: { timeout: 200 } });
  t.is(await checker.check(pool.targets[0]!), null);
  t.regex((await checker.check(pool.targets[1]!))!, /port unreachable \(ICMP\)/);
  t.is(backend.received[0]!.data.length, 0, 'an empty datagram');
});

test('UDP: with proxy_protocol v2 the probe starts with a LOCAL header', async (t) => {
  const backend = await startUdpBackend(t);
  const { checker, pool } = setup(t, [backend.port], { protocol: 'udp', proxyProtocol: 'v2', settings: { send: 'q' } });
  t.is(await checker.check(pool.targets[0]!), null);
  const parsed = parseProxyHeader(backend.received[0]!.data);
  if (parsed.kind !== 'header') return t.fail();
  t.is(parsed.header.source, null);
  t.is(backend.received[0]!.data.subarray(parsed.length).toString(), 'q');
});

// ---- scheduling ---------------------------------------------------------------------------------------

test('start(): first checks at once; a dead target goes down, comes up after rise passes, down after fall', async (t) => {
  const live = await tcpServer(t);
  const dead = await tcpServer(t);
  const deadPort = dead.port;
  await new Promise<void>((resolve) => dead.server.close(() => resolve()));
  const { checker, pool, changes } = setup(t, [live.port, deadPort], { settings: { rise: 2, fall: 2 } });
  checker.start();
  await waitFor(() => changes.length >= 1, 'the dead target to go down');
  t.deepEqual(changes.map((c) => [c.target.address, c.up]), [[`127.0.0.1:${deadPort}`, false]]);
  t.regex(changes[0]!.reason, /ECONNREFUSED.*\(health check\)$/);
  await waitFor(() => live.accepted() >= 3, 'the live target checked again and again');
  t.true(pool.targets[0]!.up);

  // The dead port comes back: up after two passes.
  const revived = net.createServer((s) => s.on('error', () => {}));
  t.teardown(() => new Promise<void>((resolve) => revived.close(() => resolve())));
  await new Promise<void>((resolve) => revived.listen(deadPort, '127.0.0.1', resolve));
  await waitFor(() => changes.length >= 2, 'the revived target to come up');
  t.deepEqual([changes[1]!.up, changes[1]!.reason], [true, '2 health checks passed in a row']);

  // And down again after two failures in a row.
  await new Promise<void>((resolve) => revived.close(() => resolve()));
  await waitFor(() => changes.length >= 3, 'down again');
  t.regex(changes[2]!.reason, /\(2 failed health checks in a row\)$/);
});

test('without health_check: nothing is checked while up; a target marked down is probed until it answers', async (t) => {
  const server = await tcpServer(t);
  const { checker, pool, changes } = setup(t, [server.port], { settings: null });
  checker.start();
  pool.connectFailed(pool.targets[0]!, 'connect ECONNREFUSED');
  checker.targetDown(pool.targets[0]!);
  await waitFor(() => pool.targets[0]!.up, 'the probe to bring it back');
  t.deepEqual(changes.map((c) => c.up), [false, true]);
  t.is(changes[1]!.reason, 'a health check passed');
  const probes = server.accepted();
  t.is(probes, 1, 'one probe, then no more checks');
});

test('without health_check: a target inherited down is probed at once, the others are not', async (t) => {
  const back = await tcpServer(t);
  const up = await tcpServer(t);
  const { checker, pool, changes } = setup(t, [back.port, up.port], { settings: null });
  pool.inherit({ [`127.0.0.1:${back.port}`]: 0, [`127.0.0.1:${up.port}`]: 1 });
  checker.start();
  await waitFor(() => pool.targets[0]!.up, 'the probe to bring the inherited target back');
  t.deepEqual(changes.map((c) => [c.target.address, c.up]), [[`127.0.0.1:${back.port}`, true]]);
  t.is(back.accepted(), 1);
  t.is(up.accepted(), 0, 'a target up is not probed');
});

test('stop(): no further checks and no state change afterwards', async (t) => {
  let accepted = 0;
  const server = await tcpServer(t, () => accepted++);
  const { checker, changes } = setup(t, [server.port]);
  checker.start();
  await waitFor(() => accepted >= 2, 'two checks');
  checker.stop();
  const seen = accepted;
  // A check that was due would have connected by now; wait for a later connection of our own instead.
  const probe = net.connect(server.port, '127.0.0.1');
  t.teardown(() => void probe.destroy());
  await waitFor(() => accepted > seen, 'our own connection');
  t.is(accepted, seen + 1);
  t.deepEqual(changes, []);
});
