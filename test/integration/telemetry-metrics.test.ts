/**
 * Metrics and the health endpoints end to end: real traffic through the daemon's children, the
 *
 * Serial: each test runs a daemon with its children, and these machines may have two cores.
 * supervisor's registry scraped over HTTP.
 */
import test from 'ava';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { startDaemon } from '../helpers/daemon.js';
import { connect, readAll, refusingPort, startEchoServer, startExchangeServer } from '../helpers/servers.js';
import { waitFor } from '../helpers/wait-for.js';
import { mainFile, metricsPort, scrape, scrapeText, tcpListener, udpEcho, udpExchange, udpListener } from '../helpers/telemetry.js';

async function roundTrip(port: number, text = 'ping'): Promise<Buffer> {
  const socket = await connect(port);
  const reply = readAll(socket);
  socket.end(text);
  return reply;
}

/** Waits until every expected series has its value; the error lists what differs. */
async function waitForSeries(port: number, expected: Record<string, number>, timeoutMs = 10_000): Promise<Map<string, number>> {
  let last = new Map<string, number>();
  try {
    return await waitFor(async () => {
      last = await scrape(port);
      return Object.entries(expected).every(([key, value]) => last.get(key) === value) ? last : undefined;
    }, 'the metrics', timeoutMs);
  } catch {
    const wrong = Object.entries(expected).filter(([key, value]) => last.get(key) !== value).map(([key, value]) => `${key}: want ${value}, got ${last.get(key)}`);
    throw new Error(`metrics differ:\n${wrong.join('\n')}`);
  }
}

/** A denied connection: the child resets it, maybe before connect completes. */
function deniedConnection(port: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => resolve());
    socket.on('close', () => resolve());
    socket.resume();
  });
}

test.serial('every family and label after real TCP and UDP traffic, with exact byte counts', async (t) => {
  const exchange = await startExchangeServer(t, 2000);
  const echo = await startEchoServer(t);
  const udp = await udpEcho(t);
  const dead = await refusingPort(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile(),
    'conf.d/web.yaml': tcpListener(`127.0.0.1:${exchange.port}`, 'rate_limits:\n  max_connections_per_ip: 1\n  action: drop\n'),
    'conf.d/locked.yaml': tcpListener(`127.0.0.1:${echo}`, '', '["192.0.2.0/24"]'),
    'conf.d/dead.yaml': tcpListener(`127.0.0.1:${dead}`),
    'conf.d/dns.yaml': udpListener(`127.0.0.1:${udp}`, 'udp:\n  session_timeout: "1s"\n'),
  });
  const metrics = await metricsPort(daemon);
  const web = await daemon.port('web');

  // One connection held open, a second one from the same address refused by the per-IP cap.
  const held = await connect(web);
  const download = readAll(held);
  await waitForSeries(metrics, { 'packetpony_connections_active{listener="web",protocol="tcp"}': 1 });
  await deniedConnection(web);
  await deniedConnection(await daemon.port('locked'));
  await deniedConnection(await daemon.port('dead'));
  await udpExchange(t, await daemon.port('dns'), [Buffer.alloc(10, 1), Buffer.alloc(30, 2)]);
  held.end(Buffer.alloc(500, 7));
  t.is((await download).length, 2000);

  const m = await waitForSeries(metrics, {
    'packetpony_connections_total{listener="web",protocol="tcp",status="accepted"}': 1,
    'packetpony_connections_total{listener="web",protocol="tcp",status="rate_limited"}': 1,
    'packetpony_connections_total{listener="web",protocol="tcp",status="acl_denied"}': 0,
    'packetpony_connections_total{listener="locked",protocol="tcp",status="acl_denied"}': 1,
    'packetpony_connections_total{listener="locked",protocol="tcp",status="accepted"}': 0,
    'packetpony_connections_total{listener="dead",protocol="tcp",status="accepted"}': 0,
    'packetpony_connections_total{listener="dns",protocol="udp",status="accepted"}': 1,
    'packetpony_connections_active{listener="web",protocol="tcp"}': 0,
    'packetpony_connections_active{listener="dns",protocol="udp"}': 0,
    // sent = client → target, received = target → client
    'packetpony_bytes_transferred_total{listener="web",direction="sent"}': 500,
    'packetpony_bytes_transferred_total{listener="web",direction="received"}': 2000,
    'packetpony_bytes_transferred_total{listener="dns",direction="sent"}': 40,
    'packetpony_bytes_transferred_total{listener="dns",direction="received"}': 40,
    'packetpony_packets_transferred_total{listener="dns",direction="sent"}': 2,
    'packetpony_packets_transferred_total{listener="dns",direction="received"}': 2,
    'packetpony_connection_duration_seconds_count{listener="web",protocol="tcp"}': 1,
    'packetpony_connection_duration_seconds_bucket{listener="web",protocol="tcp",le="+Inf"}': 1,
    'packetpony_connection_duration_seconds_bucket{listener="web",protocol="tcp",le="86400"}': 1,
    'packetpony_connection_duration_seconds_count{listener="dns",protocol="udp"}': 1,
    'packetpony_rate_limit_drops_total{listener="web",reason="connection_limit"}': 1,
    'packetpony_rate_limit_drops_total{listener="web",reason="bandwidth_limit"}': 0,
    'packetpony_acl_drops_total{listener="locked"}': 1,
    'packetpony_acl_drops_total{listener="web"}': 0,
    'packetpony_errors_total{listener="dead",type="target_connect"}': 1,
    'packetpony_listener_up{listener="web",protocol="tcp"}': 1,
    'packetpony_listener_up{listener="dns",protocol="udp"}': 1,
    'packetpony_child_restarts_total{listener="web",worker="1"}': 0,
    'packetpony_config_reloads_total{result="ok"}': 0,
    'packetpony_config_reloads_total{result="partial"}': 0,
    'packetpony_config_reloads_total{result="rejected"}': 0,
    'packetpony_log_events_dropped_total{sink="stdout"}': 0,
  }, 15_000);
  t.false(m.has('packetpony_packets_transferred_total{listener="web",direction="sent"}'), 'no packet counts for TCP');
  for (const listener of ['web', 'locked', 'dead', 'dns']) {
    t.true(m.get(`packetpony_child_resident_memory_bytes{listener="${listener}",worker="1"}`)! > 1024 * 1024, listener);
    t.true(m.get(`packetpony_child_open_fds{listener="${listener}",worker="1"}`)! > 2, listener);
    t.true(m.get(`packetpony_child_cpu_seconds_total{listener="${listener}",worker="1"}`)! > 0, listener);
  }
  t.true(m.get('process_resident_memory_bytes')! > 1024 * 1024, 'the supervisor\'s own process metrics');
  t.true(m.has('process_cpu_seconds_total'));
  t.true(m.has('process_open_fds'));

  const text = await scrapeText(metrics);
  for (const [name, type, help] of [
    ['packetpony_connections_total', 'counter', 'Total number of connections'],
    ['packetpony_connections_active', 'gauge', 'Number of active connections'],
    ['packetpony_bytes_transferred_total', 'counter', 'Total bytes transferred'],
    ['packetpony_packets_transferred_total', 'counter', 'Total packets transferred (UDP only)'],
    ['packetpony_connection_duration_seconds', 'histogram', 'Connection duration in seconds'],
    ['packetpony_rate_limit_drops_total', 'counter', 'Total connections dropped due to rate limiting'],
    ['packetpony_acl_drops_total', 'counter', 'Total connections dropped due to ACL'],
    ['packetpony_errors_total', 'counter', 'Total errors encountered'],
  ] as const) {
    t.true(text.includes(`# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`), name);
  }
  for (const line of text.split('\n').filter((l) => l.startsWith('packetpony_'))) {
    t.notRegex(line, /127\.0\.0\.1|192\.0\.2|::1/, `no address in a label: ${line}`);
  }
  const health = await fetch(`http://127.0.0.1:${metrics}/healthz`);
  t.is(health.headers.get('content-type'), 'application/json');
  t.is(await health.text(), '{"status":"healthy","service":"packetpony"}');
});

test.serial('counters survive a child killed with SIGKILL and never go down; its open connections stop counting as active', async (t) => {
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, { 'packetpony.yaml': mainFile(), 'conf.d/k.yaml': tcpListener(`127.0.0.1:${echo}`) });
  const metrics = await metricsPort(daemon);
  const port = await daemon.port('k');
  const seen = new Map<string, number>();
  const watched = ['packetpony_connections_total{listener="k",protocol="tcp",status="accepted"}', 'packetpony_bytes_transferred_total{listener="k",direction="sent"}', 'packetpony_bytes_transferred_total{listener="k",direction="received"}', 'packetpony_connection_duration_seconds_count{listener="k",protocol="tcp"}', 'packetpony_child_restarts_total{listener="k",worker="1"}'];
  /** Scrapes and checks that no watched counter went down since the last scrape. */
  const monotonic = async (): Promise<Map<string, number>> => {
    const m = await scrape(metrics);
    for (const key of watched) {
      t.true((m.get(key) ?? 0) >= (seen.get(key) ?? 0), `${key} went from ${seen.get(key)} to ${m.get(key)}`);
      seen.set(key, m.get(key) ?? 0);
    }
    return m;
  };

  for (let i = 0; i < 3; i++) t.is((await roundTrip(port, 'abcde')).toString(), 'abcde');
  const held = await connect(port);
  held.on('error', () => {});
  await waitForSeries(metrics, {
    'packetpony_connections_total{listener="k",protocol="tcp",status="accepted"}': 4,
    'packetpony_bytes_transferred_total{listener="k",direction="sent"}': 15,
    'packetpony_connections_active{listener="k",protocol="tcp"}': 1,
  });
  await monotonic();

  const pid = await daemon.childPid('k');
  process.kill(pid, 'SIGKILL');
  await waitFor(async () => (await daemon.childPid('k')) !== pid, 'a new child');
  await monotonic();
  await waitForSeries(metrics, {
    'packetpony_connections_active{listener="k",protocol="tcp"}': 0,
    'packetpony_child_restarts_total{listener="k",worker="1"}': 1,
    'packetpony_listener_up{listener="k",protocol="tcp"}': 1,
    'packetpony_connections_total{listener="k",protocol="tcp",status="accepted"}': 4,
  });

  for (let i = 0; i < 2; i++) t.is((await roundTrip(port, 'xyz')).toString(), 'xyz');
  await waitForSeries(metrics, {
    'packetpony_connections_total{listener="k",protocol="tcp",status="accepted"}': 6,
    'packetpony_bytes_transferred_total{listener="k",direction="sent"}': 21,
    'packetpony_bytes_transferred_total{listener="k",direction="received"}': 21,
    'packetpony_connection_duration_seconds_count{listener="k",protocol="tcp"}': 5,
  });
  await monotonic();
});

test.serial('/ready is 503 naming the listener while its port is taken, 200 once it is free', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  let blocked = true;
  t.teardown(() => (blocked ? blocker.close() : undefined));
  const port = (blocker.address() as net.AddressInfo).port;
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile(),
    'conf.d/taken.yaml': `protocol: tcp\nlisten_address: "127.0.0.1:${port}"\ntarget_address: "127.0.0.1:${echo}"\nallowlist: ["127.0.0.0/8"]\n`,
    'conf.d/free.yaml': tcpListener(`127.0.0.1:${echo}`),
  });
  const metrics = await metricsPort(daemon);
  await daemon.port('free');
  await daemon.waitForLine(/listener taken: .*EADDRINUSE|listener taken: .*in use/);
  const ready = await fetch(`http://127.0.0.1:${metrics}/ready`);
  t.is(ready.status, 503);
  t.is(ready.headers.get('content-type'), 'application/json');
  t.deepEqual(await ready.json(), {
    status: 'not ready',
    service: 'packetpony',
    not_ready: [{ listener: 'taken', state: 'binding', reason: `cannot bind 127.0.0.1:${port} yet; retrying` }],
  });
  t.is((await fetch(`http://127.0.0.1:${metrics}/health`)).status, 200, 'alive, just not ready');
  t.is((await scrape(metrics)).get('packetpony_listener_up{listener="taken",protocol="tcp"}'), 0);

  await new Promise<void>((resolve) => blocker.close(() => resolve()));
  blocked = false;
  const answer = await waitFor(async () => {
    const r = await fetch(`http://127.0.0.1:${metrics}/ready`);
    return r.status === 200 ? r.text() : undefined;
  }, '/ready to answer 200', 45_000);
  t.is(answer, '{"status":"healthy","service":"packetpony"}');
  t.is((await scrape(metrics)).get('packetpony_listener_up{listener="taken",protocol="tcp"}'), 1);
});

test.serial('reloads are counted by result; a reload moves the metrics server and adds a JSON sink, keeping every counter', async (t) => {
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, { 'packetpony.yaml': mainFile(), 'conf.d/r.yaml': tcpListener(`127.0.0.1:${echo}`) });
  const first = await metricsPort(daemon);
  await roundTrip(await daemon.port('r'));
  await waitForSeries(first, { 'packetpony_connections_total{listener="r",protocol="tcp",status="accepted"}': 1 });

  process.kill(daemon.pid, 'SIGHUP');
  await waitForSeries(first, { 'packetpony_config_reloads_total{result="ok"}': 1 });

  const main = join(daemon.dir, 'packetpony.yaml');
  writeFileSync(main, 'logging: [this is not a mapping\n');
  process.kill(daemon.pid, 'SIGHUP');
  await waitFor(async () => ((await scrape(first)).get('packetpony_config_reloads_total{result="rejected"}') ?? 0) >= 1, 'a rejected reload counted');

  const path = join(daemon.dir, 'events.json');
  const from = daemon.lines.length;
  writeFileSync(main, `logging:\n  stdout:\n    enabled: true\n  jsonlog:\n    enabled: true\n    path: "${path}"\nmetrics:\n  prometheus:\n    enabled: true\n    listen_address: "127.0.0.2:0"\n    path: /prom\n`);
  process.kill(daemon.pid, 'SIGHUP');
  const moved = Number(/address=127\.0\.0\.2:(\d+)/.exec(await daemon.waitForLine(/metrics server moved address=127\.0\.0\.2:\d+ path=\/prom/, 15_000, from))![1]);
  await t.throwsAsync(fetch(`http://127.0.0.1:${first}/health`), undefined, 'the old address is closed');
  const m = await (await fetch(`http://127.0.0.2:${moved}/prom`)).text();
  t.true(m.includes('packetpony_connections_total{listener="r",protocol="tcp",status="accepted"} 1\n'));
  t.regex(m, /packetpony_config_reloads_total\{result="ok"\} [1-9]/);

  await roundTrip(await daemon.port('r'));
  await waitFor(() => existsSync(path) && readFileSync(path, 'utf8').includes('"event_type":"close"'), 'the new JSON sink to get the next connection');

  // A metrics address that cannot be bound: the reload counts as partial, the server stays put.
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  t.teardown(() => blocker.close());
  const taken = (blocker.address() as net.AddressInfo).port;
  writeFileSync(main, `logging:\n  stdout:\n    enabled: true\nmetrics:\n  prometheus:\n    enabled: true\n    listen_address: "127.0.0.1:${taken}"\n    path: /prom\n`);
  process.kill(daemon.pid, 'SIGHUP');
  await daemon.waitForLine(new RegExp(`metrics settings not applied: cannot listen on 127\\.0\\.0\\.1:${taken} .*EADDRINUSE`), 15_000, from);
  const after = await waitFor(async () => {
    const text = await (await fetch(`http://127.0.0.2:${moved}/prom`)).text();
    return /packetpony_config_reloads_total\{result="partial"\} [1-9]/.test(text) ? text : undefined;
  }, 'the partial reload counted at the address kept');
  t.true(after.includes('packetpony_connections_total{listener="r",protocol="tcp",status="accepted"} 2\n'));
});

/** The voluntary context switches of a process's main thread: one per time it went to sleep. */
function sleepsOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/task/${pid}/status`, 'latin1');
  return Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)![1]);
}

test.serial('an idle daemon sleeps: its supervisor and child wake a few times a second, not a hundred', async (t) => {
  if (!existsSync('/proc/self/task')) {
    t.pass('no /proc: nothing to count');
    return;
  }
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile(),
    'conf.d/web.yaml': tcpListener(`127.0.0.1:${echo}`),
  });
  const metrics = await metricsPort(daemon);
  await daemon.port('web');
  const child = await daemon.childPid('web');
  await scrape(metrics); // every collector has run once
  // A count of wake-ups over a span of idle time, not a measure of speed: each timer period shows
  // in it whatever the machine's load. The supervisor's timers tick once a second (stats, the
  // event-loop sampler, the metrics server's connection check); prom-client's default sampler at
  // 10 ms made it about a hundred.
  const before = { supervisor: sleepsOf(daemon.pid), child: sleepsOf(child), at: performance.now() };
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const seconds = (performance.now() - before.at) / 1000;
  const supervisor = (sleepsOf(daemon.pid) - before.supervisor) / seconds;
  const listener = (sleepsOf(child) - before.child) / seconds;
  t.log(`wake-ups per second: supervisor ${supervisor.toFixed(1)}, child ${listener.toFixed(1)}`);
  t.true(supervisor < 20, `the supervisor woke ${supervisor.toFixed(1)} times a second`);
  t.true(listener < 20, `the child woke ${listener.toFixed(1)} times a second`);
});
