/**
 * Several targets end to end (issue 11): each balance mode, backups, failover within one
 * connection, health checks going down after `fall` and up after `rise`, every target down, UDP
 * sessions across targets, packetpony_target_up, and live reload of the target list. Backends name
 * themselves on every connection (test/helpers/upstream.ts), so a client knows which one answered.
 */
import test from 'ava';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon } from '../helpers/daemon.js';
import { waitForConnectionLines } from '../helpers/log-lines.js';
import { MAIN_FILE_WITH_METRICS, waitForSample } from '../helpers/metrics.js';
import { slots } from '../helpers/slots.js';
import { startUdpBackend, udpClient } from '../helpers/udp.js';
import { waitFor } from '../helpers/wait-for.js';
import { nameOnce, namedBackend, waitForMetric, whoAnswers, type NamedBackend } from '../helpers/upstream.js';

const slot = slots(2);

function listener(backends: Array<NamedBackend | { port: number; backup?: boolean }>, extra = '', protocol = 'tcp'): string {
  const targets = backends.map((b) => `  - address: "127.0.0.1:${b.port}"\n${'backup' in b && b.backup ? '    backup: true\n' : ''}`).join('');
  return `protocol: ${protocol}\nlisten_address: "127.0.0.1:0"\nallowlist: ["127.0.0.0/8"]\ntargets:\n${targets}${extra}`;
}

const CHECKS = 'health_check:\n  interval: "100ms"\n  timeout: "1s"\n  rise: 2\n  fall: 2\n';

test('round_robin: in turn; every target is reported up', async (t) => {
  await slot(t);
  const [a, b, c] = [await namedBackend(t, 'a'), await namedBackend(t, 'b'), await namedBackend(t, 'c')];
  const daemon = await startDaemon(t, { 'packetpony.yaml': MAIN_FILE_WITH_METRICS, 'conf.d/rr.yaml': listener([a, b, c]) });
  const port = await daemon.port('rr');
  const names: Array<string | null> = [];
  for (let i = 0; i < 6; i++) names.push(await nameOnce(t, port));
  t.deepEqual(names, ['a', 'b', 'c', 'a', 'b', 'c']);
  await daemon.waitForLine(/listener rr up .*target=127\.0\.0\.1:\d+,127\.0\.0\.1:\d+,127\.0\.0\.1:\d+ /);
  for (const backend of [a, b, c]) {
    t.is(await waitForMetric(daemon, 'packetpony_target_up', { listener: 'rr', target: `127.0.0.1:${backend.port}` }, (v) => v === 1), 1);
  }
  const [open] = await waitForConnectionLines(daemon, 'opened', 'rr', 1);
  t.regex(open!, new RegExp(`dst=127\\.0\\.0\\.1:${a.port}$`), 'the event names the target used');
});

test('least_connections: new connections go to the target with the fewest open ones', async (t) => {
  await slot(t);
  const [a, b] = [await namedBackend(t, 'a'), await namedBackend(t, 'b')];
  const daemon = await startDaemon(t, { 'conf.d/lc.yaml': listener([a, b], 'balance: least_connections\n') });
  const port = await daemon.port('lc');
  const held = await whoAnswers(t, port);
  t.is(held!.name, 'a');
  for (let i = 1; i <= 3; i++) {
    t.is(await nameOnce(t, port), 'b', `short connection ${i}`);
    await waitForConnectionLines(daemon, 'closed', 'lc', i);
  }
  held!.socket.destroy();
  await waitForConnectionLines(daemon, 'closed', 'lc', 4);
  const names = [await whoAnswers(t, port), await whoAnswers(t, port)].map((x) => x!.name).sort();
  t.deepEqual(names, ['a', 'b'], 'with none open, one each');
});

test('source_hash: a client address keeps its target; different addresses spread', async (t) => {
  await slot(t);
  const backends = [await namedBackend(t, 'a'), await namedBackend(t, 'b'), await namedBackend(t, 'c')];
  const daemon = await startDaemon(t, { 'conf.d/sh.yaml': listener(backends, 'balance: source_hash\n') });
  const port = await daemon.port('sh');
  const seen = new Set<string>();
  for (let i = 10; i < 22; i++) {
    const from = `127.0.0.${i}`;
    const first = await nameOnce(t, port, { localAddress: from });
    t.not(first, null);
    for (let j = 0; j < 2; j++) t.is(await nameOnce(t, port, { localAddress: from }), first, from);
    seen.add(first!);
  }
  t.true(seen.size >= 2, `twelve addresses over ${seen.size} target(s)`);
});

test('failover and backup: a refusing target is skipped within the connection, marked down, and back after a probe', async (t) => {
  await slot(t);
  const primary = await namedBackend(t, 'primary');
  const spare = await namedBackend(t, 'spare');
  await primary.stop();
  const daemon = await startDaemon(t, {
    'packetpony.yaml': MAIN_FILE_WITH_METRICS,
    'conf.d/fo.yaml': listener([primary, { port: spare.port, backup: true }]),
  });
  const port = await daemon.port('fo');
  t.is(await nameOnce(t, port), 'spare', 'the client is served by the backup at once');
  const down = await daemon.waitForLine(new RegExp(`\\[WARNING\\] listener fo: target 127\\.0\\.0\\.1:${primary.port} is down: connect to 127\\.0\\.0\\.1:${primary.port} failed: connection refused \\(ECONNREFUSED\\) \\(a client connection failed\\)`));
  t.truthy(down);
  t.is(await waitForMetric(daemon, 'packetpony_target_up', { listener: 'fo', target: `127.0.0.1:${primary.port}` }, (v) => v === 0), 0);
  t.is(await nameOnce(t, port), 'spare');
  t.false(daemon.lines.some((l) => l.includes('Connection failed')), 'no client saw a failure');

  await primary.start();
  await daemon.waitForLine(new RegExp(`\\[NOTICE\\] listener fo: target 127\\.0\\.0\\.1:${primary.port} is up: a health check passed`));
  t.is(await nameOnce(t, port), 'primary', 'backups only while no regular target is up');
  t.is(await waitForMetric(daemon, 'packetpony_target_up', { listener: 'fo', target: `127.0.0.1:${primary.port}` }, (v) => v === 1), 1);
});

test('health checks: down after fall failed checks, no connections meanwhile, up after rise passed ones', async (t) => {
  await slot(t);
  const [a, b] = [await namedBackend(t, 'a'), await namedBackend(t, 'b')];
  const daemon = await startDaemon(t, { 'packetpony.yaml': MAIN_FILE_WITH_METRICS, 'conf.d/hc.yaml': listener([a, b], CHECKS) });
  const port = await daemon.port('hc');
  await waitFor(() => a.accepted() >= 2 && b.accepted() >= 2, 'both targets checked');
  await a.stop();
  await daemon.waitForLine(new RegExp(`listener hc: target 127\\.0\\.0\\.1:${a.port} is down: .*ECONNREFUSED.* \\(2 failed health checks in a row\\)`));
  t.is(await waitForMetric(daemon, 'packetpony_target_up', { listener: 'hc', target: `127.0.0.1:${a.port}` }, (v) => v === 0), 0);
  for (let i = 0; i < 4; i++) t.is(await nameOnce(t, port), 'b');

  await a.start();
  await daemon.waitForLine(new RegExp(`listener hc: target 127\\.0\\.0\\.1:${a.port} is up: 2 health checks passed in a row`));
  const names = new Set([await nameOnce(t, port), await nameOnce(t, port)]);
  t.deepEqual([...names].sort(), ['a', 'b']);
  t.is(await waitForMetric(daemon, 'packetpony_target_up', { listener: 'hc', target: `127.0.0.1:${a.port}` }, (v) => v === 1), 1);
});

test('every target down: clients are refused at once, counted and logged without a flood; served again when one is back', async (t) => {
  await slot(t);
  const [a, b] = [await namedBackend(t, 'a'), await namedBackend(t, 'b')];
  const daemon = await startDaemon(t, { 'packetpony.yaml': MAIN_FILE_WITH_METRICS, 'conf.d/down.yaml': listener([a, b], CHECKS) });
  const port = await daemon.port('down');
  await a.stop();
  await b.stop();
  await daemon.waitForLine(/\[ERROR\] listener down: every target is down; new clients are refused until one is up again/);
  for (let i = 0; i < 5; i++) t.is(await nameOnce(t, port), null);
  t.is(await waitForSample(daemon, 'packetpony_errors_total', { listener: 'down', type: 'no_target' }, 5), 5);
  // The line travels through the daemon's stdout, the count through /metrics: either may arrive first.
  await daemon.waitForLine(/listener down: refused client 127\.0\.0\.1:\d+: every target is down/);
  t.is(daemon.lines.filter((l) => /listener down: refused client 127\.0\.0\.1:\d+: every target is down/.test(l)).length, 1, 'one line for five refusals (the rest are counted later)');
  t.false(daemon.lines.some((l) => l.includes('Connection opened') || l.includes('Connection failed')));

  await b.start();
  await daemon.waitForLine(/listener down: target .* is up/);
  t.is(await nameOnce(t, port), 'b');
});

test('UDP: sessions spread over targets; a target that fails its checks loses its sessions to the others', async (t) => {
  await slot(t);
  const respond = (name: string) => (data: Buffer): Buffer => Buffer.from(data.toString() === 'ping' ? 'pong' : name);
  const a = await startUdpBackend(t, { respond: respond('a') });
  const b = await startUdpBackend(t, { respond: respond('b') });
  const daemon = await startDaemon(t, {
    'packetpony.yaml': MAIN_FILE_WITH_METRICS,
    'conf.d/udp.yaml': listener([a, b], 'health_check:\n  interval: "100ms"\n  timeout: "300ms"\n  rise: 1\n  fall: 1\n  send: "ping"\n  expect: "pong"\n', 'udp'),
  });
  const port = await daemon.port('udp');
  const one = await udpClient(t, port);
  const two = await udpClient(t, port);
  t.is((await one.request('hi')).toString(), 'a');
  t.is((await two.request('hi')).toString(), 'b');
  t.is((await one.request('again')).toString(), 'a', 'a session keeps its target');

  // a stops answering: down at its next check, its session ends, the client's next datagram goes to b.
  await new Promise<void>((resolve) => a.socket.close(() => resolve()));
  await daemon.waitForLine(new RegExp(`listener udp: target 127\\.0\\.0\\.1:${a.port} is down`));
  await waitFor(() => daemon.lines.some((l) => new RegExp(`Connection closed: listener=udp protocol=udp src=127\\.0\\.0\\.1:${one.localPort} `).test(l)), 'the session of a to end');
  t.is((await one.request('moved')).toString(), 'b');
  t.is(await waitForMetric(daemon, 'packetpony_target_up', { listener: 'udp', target: `127.0.0.1:${a.port}` }, (v) => v === 0), 0);
});

test('live reload: the target list, balance and checks change without a restart; gauges follow', async (t) => {
  await slot(t);
  const [a, b, c] = [await namedBackend(t, 'a'), await namedBackend(t, 'b'), await namedBackend(t, 'c')];
  const daemon = await startDaemon(t, { 'packetpony.yaml': MAIN_FILE_WITH_METRICS, 'conf.d/live.yaml': listener([a, b]) });
  const port = await daemon.port('live');
  t.deepEqual([await nameOnce(t, port), await nameOnce(t, port)], ['a', 'b']);
  await waitForMetric(daemon, 'packetpony_target_up', { listener: 'live', target: `127.0.0.1:${a.port}` }, (v) => v === 1);

  const from = daemon.lines.length;
  writeFileSync(join(daemon.dir, 'conf.d/live.yaml'), listener([b, c], `balance: least_connections\n${CHECKS}`));
  await daemon.waitForLine(/listener live reconfigured/, 15_000, from);
  t.is(await daemon.port('live'), port);
  const names = new Set<string | null>();
  for (let i = 0; i < 4; i++) names.add(await nameOnce(t, port));
  t.deepEqual([...names].sort(), ['b', 'c']);
  await waitForMetric(daemon, 'packetpony_target_up', { listener: 'live', target: `127.0.0.1:${a.port}` }, (v) => v === undefined);
  t.is(await waitForMetric(daemon, 'packetpony_target_up', { listener: 'live', target: `127.0.0.1:${c.port}` }, (v) => v === 1), 1);
  await waitFor(() => c.accepted() >= 4, 'the new child to health-check c');
});

test('a target found dead stays down across a reload and a crash restart: no client is sent to it again', async (t) => {
  await slot(t);
  const dead = await namedBackend(t, 'dead');
  const b = await namedBackend(t, 'b');
  await dead.stop();
  const daemon = await startDaemon(t, { 'packetpony.yaml': MAIN_FILE_WITH_METRICS, 'conf.d/inh.yaml': listener([dead, b]) });
  const port = await daemon.port('inh');
  const deadAddress = `127\\.0\\.0\\.1:${dead.port}`;
  const failed = new RegExp(`listener inh: target ${deadAddress} is down: .*\\(a client connection failed\\)`);
  const startsDown = new RegExp(`\\[NOTICE\\] listener inh: target ${deadAddress} starts down, as the listener's previous process last saw it`);
  t.is(await nameOnce(t, port), 'b', 'round robin tried the dead target first and failed over');
  await daemon.waitForLine(failed);
  await waitForMetric(daemon, 'packetpony_target_up', { listener: 'inh', target: `127.0.0.1:${dead.port}` }, (v) => v === 0);

  // Reload: the new child starts with the dead target down. Round robin would send it the first
  // client otherwise (and the failed dial would log it down a second time).
  let from = daemon.lines.length;
  const firstPid = await daemon.childPid('inh');
  writeFileSync(join(daemon.dir, 'conf.d/inh.yaml'), listener([dead, b], 'tcp:\n  connect_timeout: "9s"\n'));
  await daemon.waitForLine(/listener inh reconfigured/, 15_000, from);
  await daemon.waitForLine(startsDown, 10_000, from);
  t.not(await daemon.childPid('inh'), firstPid, 'a new child');
  for (let i = 0; i < 3; i++) t.is(await nameOnce(t, port), 'b');

  // Crash: the supervisor restarts the child with the states the last one reported.
  from = daemon.lines.length;
  const reloadedPid = await daemon.childPid('inh');
  process.kill(reloadedPid, 'SIGKILL');
  await daemon.waitForLine(/listener inh up /, 30_000, from);
  await daemon.waitForLine(startsDown, 10_000, from);
  for (let i = 0; i < 3; i++) t.is(await nameOnce(t, port), 'b');
  t.is(daemon.lines.filter((l) => failed.test(l)).length, 1, 'no client was sent to the dead target after the first');

  // And it comes back as any down target does: its recovery probe answers.
  await dead.start();
  await daemon.waitForLine(new RegExp(`listener inh: target ${deadAddress} is up: a health check passed`));
  t.is(await waitForMetric(daemon, 'packetpony_target_up', { listener: 'inh', target: `127.0.0.1:${dead.port}` }, (v) => v === 1), 1);
});
