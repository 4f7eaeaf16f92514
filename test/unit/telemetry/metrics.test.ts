/** The metrics fed from child reports, without any process: names, types, help, labels, sums. */
import test from 'ava';
import type { Protocol } from '../../../src/config/types.js';
import { Metrics, type ListenerView } from '../../../src/telemetry/metrics/metrics.js';
import { DURATION_BUCKETS, ListenerStats, type StatsDelta } from '../../../src/telemetry/stats.js';

/** A one-worker listener whose children are `pids` (the array is read at each scrape). */
function view(name: string, protocol: Protocol, state = 'ready', pids: number[] = []): ListenerView {
  return { name, config: { protocol }, state, workerPids: new Map([[1, pids]]) };
}

function delta(fill: (stats: ListenerStats) => void): StatsDelta {
  const stats = new ListenerStats();
  fill(stats);
  return stats.takeDelta();
}

/** `name{labels} value` lines of one scrape, as a map. */
async function scrape(metrics: Metrics): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const line of (await metrics.render()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

test('the eight families of the original: exact names, types and help texts', async (t) => {
  const metrics = new Metrics(() => [view('web', 'tcp')]);
  const text = await metrics.render();
  const expected: Array<[string, string, string]> = [
    ['packetpony_connections_total', 'counter', 'Total number of connections'],
    ['packetpony_connections_active', 'gauge', 'Number of active connections'],
    ['packetpony_bytes_transferred_total', 'counter', 'Total bytes transferred'],
    ['packetpony_packets_transferred_total', 'counter', 'Total packets transferred (UDP only)'],
    ['packetpony_connection_duration_seconds', 'histogram', 'Connection duration in seconds'],
    ['packetpony_rate_limit_drops_total', 'counter', 'Total connections dropped due to rate limiting'],
    ['packetpony_acl_drops_total', 'counter', 'Total connections dropped due to ACL'],
    ['packetpony_errors_total', 'counter', 'Total errors encountered'],
  ];
  for (const [name, type, help] of expected) {
    t.true(text.includes(`# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`), name);
  }
  for (const name of ['packetpony_listener_up', 'packetpony_child_restarts_total', 'packetpony_config_reloads_total', 'packetpony_log_events_dropped_total', 'process_resident_memory_bytes', 'process_cpu_seconds_total', 'process_open_fds']) {
    t.true(text.includes(`# TYPE ${name} `), name);
  }
});

test('deltas from several children add up; the active level is summed per living child', async (t) => {
  const metrics = new Metrics(() => [view('web', 'tcp')]);
  metrics.report('web', { stats: delta((s) => { s.accepted = 3; s.active = 2; s.bytesSent = 100; s.bytesReceived = 1000; }), dropped_events: 0 }, 101);
  metrics.report('web', { stats: delta((s) => { s.accepted = 1; s.active = 1; s.bytesSent = 5; }), dropped_events: 0 }, 102);
  metrics.report('web', { stats: delta((s) => { s.aclDenied = 2; s.aclDrops = 2; s.rateLimited = 1; s.rateLimitDrop('attempt_limit'); s.error('target_connect'); s.active = 2; }), dropped_events: 4 }, 101);
  let m = await scrape(metrics);
  t.is(m.get('packetpony_connections_total{listener="web",protocol="tcp",status="accepted"}'), 4);
  t.is(m.get('packetpony_connections_total{listener="web",protocol="tcp",status="acl_denied"}'), 2);
  t.is(m.get('packetpony_connections_total{listener="web",protocol="tcp",status="rate_limited"}'), 1);
  t.is(m.get('packetpony_bytes_transferred_total{listener="web",direction="sent"}'), 105);
  t.is(m.get('packetpony_bytes_transferred_total{listener="web",direction="received"}'), 1000);
  t.is(m.get('packetpony_acl_drops_total{listener="web"}'), 2);
  t.is(m.get('packetpony_rate_limit_drops_total{listener="web",reason="attempt_limit"}'), 1);
  t.is(m.get('packetpony_rate_limit_drops_total{listener="web",reason="connection_limit"}'), 0);
  t.is(m.get('packetpony_errors_total{listener="web",type="target_connect"}'), 1);
  t.is(m.get('packetpony_connections_active{listener="web",protocol="tcp"}'), 3);
  t.is(m.get('packetpony_log_events_dropped_total{sink="ipc"}'), 4);
  t.false([...m.keys()].some((k) => k.startsWith('packetpony_packets_transferred_total{listener="web"')), 'no packet series for TCP');

  metrics.childGone('web', 101);
  // A report that arrives after its child's exit still counts, but cannot revive its active level.
  metrics.report('web', { stats: delta((s) => { s.bytesSent = 1; s.active = 7; }), dropped_events: 0 }, 101);
  m = await scrape(metrics);
  t.is(m.get('packetpony_connections_active{listener="web",protocol="tcp"}'), 1);
  t.is(m.get('packetpony_bytes_transferred_total{listener="web",direction="sent"}'), 106);
  metrics.childGone('web', 102);
  t.is((await scrape(metrics)).get('packetpony_connections_active{listener="web",protocol="tcp"}'), 0);
  t.is((await scrape(metrics)).get('packetpony_connections_total{listener="web",protocol="tcp",status="accepted"}'), 4, 'never decreases');
});

test('the duration histogram takes the children\'s bucket counts as they are', async (t) => {
  const metrics = new Metrics(() => [view('dns', 'udp')]);
  metrics.report('dns', { stats: delta((s) => { s.observeDuration(0.003); s.observeDuration(0.2); s.observeDuration(7200); s.observeDuration(100000); s.packetsSent = 9; }), dropped_events: 0 }, 7);
  metrics.report('dns', { stats: delta((s) => s.observeDuration(0.2)), dropped_events: 0 }, 7);
  const m = await scrape(metrics);
  const bucket = (le: string): number | undefined => m.get(`packetpony_connection_duration_seconds_bucket{listener="dns",protocol="udp",le="${le}"}`);
  t.is(bucket('0.005'), 1);
  t.is(bucket('0.1'), 1);
  t.is(bucket('0.25'), 3);
  t.is(bucket('3600'), 3);
  t.is(bucket('7200'), 4);
  t.is(bucket('86400'), 4);
  t.is(bucket('+Inf'), 5);
  t.is(m.get('packetpony_connection_duration_seconds_count{listener="dns",protocol="udp"}'), 5);
  t.is(Math.round(m.get('packetpony_connection_duration_seconds_sum{listener="dns",protocol="udp"}')! * 1000), Math.round((0.003 + 0.2 + 7200 + 100000 + 0.2) * 1000));
  t.is(DURATION_BUCKETS.at(-1), 86400, 'buckets reach a day');
  t.is(m.get('packetpony_packets_transferred_total{listener="dns",direction="sent"}'), 9);
  t.is(m.get('packetpony_packets_transferred_total{listener="dns",direction="received"}'), 0);
  t.is(m.get('packetpony_rate_limit_drops_total{listener="dns",reason="session_limit"}'), 0);
});

test('listener_up follows the state; restarts count by worker; reloads and sink drops by label', async (t) => {
  const listeners = [view('web', 'tcp', 'ready'), view('dns', 'udp', 'binding')];
  const metrics = new Metrics(() => listeners);
  metrics.childRestarting('web', 1);
  metrics.childRestarting('web', 1);
  metrics.configReloaded('ok');
  metrics.configReloaded('partial');
  metrics.configReloaded('partial');
  metrics.logEventsDropped('syslog', 12);
  const m = await scrape(metrics);
  t.is(m.get('packetpony_listener_up{listener="web",protocol="tcp"}'), 1);
  t.is(m.get('packetpony_listener_up{listener="dns",protocol="udp"}'), 0);
  t.is(m.get('packetpony_child_restarts_total{listener="web",worker="1"}'), 2);
  t.is(m.get('packetpony_child_restarts_total{listener="dns",worker="1"}'), 0);
  t.is(m.get('packetpony_config_reloads_total{result="ok"}'), 1);
  t.is(m.get('packetpony_config_reloads_total{result="partial"}'), 2);
  t.is(m.get('packetpony_config_reloads_total{result="rejected"}'), 0);
  t.is(m.get('packetpony_log_events_dropped_total{sink="syslog"}'), 12);
  t.is(m.get('packetpony_log_events_dropped_total{sink="jsonlog"}'), 0);
  listeners.pop();
  t.false((await scrape(metrics)).has('packetpony_listener_up{listener="dns",protocol="udp"}'), 'a removed listener is no longer up or down');
});

test('process figures of children are read from /proc by PID and labelled by listener and worker', async (t) => {
  const metrics = new Metrics(() => [view('self', 'tcp', 'ready', [process.pid])]);
  const m = await scrape(metrics);
  t.true(m.get('packetpony_child_resident_memory_bytes{listener="self",worker="1"}')! > 1024 * 1024);
  t.true(m.get('packetpony_child_open_fds{listener="self",worker="1"}')! > 2);
  t.true(m.get('packetpony_child_cpu_seconds_total{listener="self",worker="1"}')! > 0);
});

test('several workers: each has its own series of the child families, summed over its children; the other families stay per listener', async (t) => {
  // Worker 1 is this process and worker 2 its parent (ava's): two real PIDs with different figures.
  const workers = new Map([[1, [process.pid]], [2, [process.ppid]], [3, [] as number[]]]);
  const metrics = new Metrics(() => [{ name: 'web', config: { protocol: 'tcp' }, state: 'ready', workerPids: workers }]);
  metrics.childRestarting('web', 2);
  metrics.report('web', { stats: delta((s) => (s.accepted = 3)), dropped_events: 0 }, process.pid);
  metrics.report('web', { stats: delta((s) => (s.accepted = 4)), dropped_events: 0 }, process.ppid);
  const m = await scrape(metrics);
  for (const worker of ['1', '2']) {
    t.true(m.get(`packetpony_child_resident_memory_bytes{listener="web",worker="${worker}"}`)! > 1024 * 1024, worker);
    t.true(m.get(`packetpony_child_open_fds{listener="web",worker="${worker}"}`)! > 2, worker);
    t.true(m.get(`packetpony_child_cpu_seconds_total{listener="web",worker="${worker}"}`)! > 0, worker);
  }
  t.not(m.get('packetpony_child_resident_memory_bytes{listener="web",worker="1"}'), m.get('packetpony_child_resident_memory_bytes{listener="web",worker="2"}'));
  t.false(m.has('packetpony_child_resident_memory_bytes{listener="web",worker="3"}'), 'a worker without a child has no process figures');
  t.is(m.get('packetpony_child_restarts_total{listener="web",worker="1"}'), 0);
  t.is(m.get('packetpony_child_restarts_total{listener="web",worker="2"}'), 1);
  t.is(m.get('packetpony_child_restarts_total{listener="web",worker="3"}'), 0, 'a worker restarting has its series');
  t.is(m.get('packetpony_connections_total{listener="web",protocol="tcp",status="accepted"}'), 7, 'the listener sum');
  t.false([...m.keys()].some((key) => key.startsWith('packetpony_connections_total') && key.includes('worker=')));
});

test('child CPU seconds never go down when a child is replaced, and stay with its worker', async (t) => {
  const pids = [process.pid];
  const second: number[] = [];
  const metrics = new Metrics(() => [{ name: 'w', config: { protocol: 'tcp' }, state: 'ready', workerPids: new Map([[1, second], [2, pids]]) }]);
  const before = (await scrape(metrics)).get('packetpony_child_cpu_seconds_total{listener="w",worker="2"}')!;
  t.true(before > 0);
  metrics.childGone('w', process.pid);
  pids.length = 0;
  await new Promise((resolve) => setTimeout(resolve, 600)); // past the sample cache
  const after = await scrape(metrics);
  t.true(after.get('packetpony_child_cpu_seconds_total{listener="w",worker="2"}')! >= before);
  t.false(after.has('packetpony_child_cpu_seconds_total{listener="w",worker="1"}'), 'worker 1 ran nothing');
});

test('no label of any packetpony metric holds an address', async (t) => {
  const metrics = new Metrics(() => [view('web', 'tcp')]);
  metrics.report('web', { stats: delta((s) => { s.accepted = 1; s.error('client_read'); }), dropped_events: 0 }, 1);
  for (const line of (await metrics.render()).split('\n')) {
    if (line.startsWith('packetpony_')) t.notRegex(line, /\d+\.\d+\.\d+\.\d+|::/, line);
  }
});

test('garbage in a report never throws and never makes a counter go down', async (t) => {
  const metrics = new Metrics(() => [view('web', 'tcp')]);
  const bad = { ...delta((s) => (s.accepted = 2)), bytes_sent: -5, bytes_received: Number.NaN, active: -1 } as StatsDelta;
  t.notThrows(() => metrics.report('web', { stats: bad, dropped_events: -3 }, 1));
  const m = await scrape(metrics);
  t.is(m.get('packetpony_connections_total{listener="web",protocol="tcp",status="accepted"}'), 2);
  t.is(m.get('packetpony_bytes_transferred_total{listener="web",direction="sent"}'), 0);
  t.is(m.get('packetpony_connections_active{listener="web",protocol="tcp"}'), 0);
});

test('tracked addresses: a level summed over living children, zero when they are gone, untouched by children that do not say', async (t) => {
  const metrics = new Metrics(() => [view('web', 'udp')]);
  t.is((await scrape(metrics)).get('packetpony_tracked_addresses{listener="web"}'), 0);
  metrics.report('web', { stats: delta((s) => { s.tracked = 9000; }), dropped_events: 0 }, 201);
  metrics.report('web', { stats: delta((s) => { s.tracked = 40; }), dropped_events: 0 }, 202);
  t.is((await scrape(metrics)).get('packetpony_tracked_addresses{listener="web"}'), 9040);
  metrics.report('web', { stats: delta((s) => { s.tracked = 12; }), dropped_events: 0 }, 201);
  const older = delta(() => {});
  delete older.tracked;
  metrics.report('web', { stats: older, dropped_events: 0 }, 202);
  t.is((await scrape(metrics)).get('packetpony_tracked_addresses{listener="web"}'), 52);
  metrics.childGone('web', 201);
  t.is((await scrape(metrics)).get('packetpony_tracked_addresses{listener="web"}'), 40);
});

test('ListenerStats: a level that changed is worth a report even when no counter moved; the first report always is', (t) => {
  const stats = new ListenerStats();
  t.true(stats.changed, 'the first report');
  stats.takeDelta();
  t.false(stats.changed);
  stats.tracked = 5;
  t.true(stats.changed);
  t.is(stats.takeDelta().tracked, 5);
  t.false(stats.changed);
  stats.active = 1;
  t.true(stats.changed);
});
