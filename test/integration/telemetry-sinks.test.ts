/**
 * Log sinks end to end: the real daemon and its children, receivers on loopback and in temp folders.
 *
 * Serial: each test runs a daemon with its children, and these machines may have two cores.
 */
import test from 'ava';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { configDir } from '../helpers/config-dir.js';
import { startDaemon } from '../helpers/daemon.js';
import { runCli } from '../helpers/run-cli.js';
import { connect, readAll, refusingPort, startEchoServer, startExchangeServer } from '../helpers/servers.js';
import { waitFor } from '../helpers/wait-for.js';
import {
  mainFile,
  metricsPort,
  scrape,
  syslogTcpReceiver,
  syslogUdpReceiver,
  tcpListener,
  tempDir,
  udpEcho,
  udpExchange,
  udpListener,
  unixReceiver,
} from '../helpers/telemetry.js';

type Json = Record<string, unknown>;

function jsonLines(path: string): Json[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Json);
}

/** One TCP connection that sends `text`, ends, and reads everything back. */
async function roundTrip(port: number, text = 'ping'): Promise<{ localPort: number; reply: Buffer }> {
  const socket = await connect(port);
  const localPort = socket.localPort!;
  const reply = readAll(socket);
  socket.end(text);
  return { localPort, reply: await reply };
}

const CONNECTION_KEYS = ['timestamp', 'listener_name', 'protocol', 'source_ip', 'source_port', 'target_ip', 'target_port', 'event_type', 'bytes_sent', 'bytes_received', 'duration_ms'];
const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

test.serial('JSON file and stdout: the original fields, and bytes_sent counting client → target, for a known TCP transfer', async (t) => {
  const backend = await startExchangeServer(t, 3000);
  const dir = tempDir(t);
  const path = join(dir, 'events.json');
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile({ logging: `jsonlog:\n  enabled: true\n  path: "${path}"`, metrics: false }),
    'conf.d/tcp1.yaml': tcpListener(`127.0.0.1:${backend.port}`),
  });
  const { localPort, reply } = await roundTrip(await daemon.port('tcp1'), 'x'.repeat(1234));
  t.is(reply.length, 3000);

  const close = await waitFor(() => jsonLines(path).find((e) => e.listener_name === 'tcp1' && e.event_type === 'close'), 'the close event in the file');
  const open = jsonLines(path).find((e) => e.listener_name === 'tcp1' && e.event_type === 'open')!;
  t.deepEqual(Object.keys(close), CONNECTION_KEYS);
  t.deepEqual(Object.keys(open), CONNECTION_KEYS);
  t.like(close, {
    listener_name: 'tcp1',
    protocol: 'tcp',
    source_ip: '127.0.0.1',
    source_port: localPort,
    target_ip: '127.0.0.1',
    target_port: backend.port,
    bytes_sent: 1234,
    bytes_received: 3000,
  });
  t.regex(close.timestamp as string, RFC3339);
  t.true(Number.isInteger(close.duration_ms) && (close.duration_ms as number) >= 0);
  t.like(open, { source_port: localPort, bytes_sent: 0, bytes_received: 0 });
  // The daemon's own messages go to the file too.
  t.true(jsonLines(path).some((e) => e.level === 'info' && e.message === 'listener tcp1 up'));

  const text = await daemon.waitForLine(/Connection closed: listener=tcp1 /);
  t.regex(text, new RegExp(`^\\[\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\] Connection closed: listener=tcp1 protocol=tcp src=127\\.0\\.0\\.1:${localPort} dst=127\\.0\\.0\\.1:${backend.port} duration=\\d+ms bytes_sent=1234 bytes_recv=3000$`));
  t.regex(daemon.lines.find((l) => l.includes('Connection opened: listener=tcp1'))!, new RegExp(`Connection opened: listener=tcp1 protocol=tcp src=127\\.0\\.0\\.1:${localPort} dst=127\\.0\\.0\\.1:${backend.port}$`));
});

test.serial('JSON file: a UDP session reports packets and bytes each way', async (t) => {
  const echo = await udpEcho(t);
  const path = join(tempDir(t), 'events.json');
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile({ logging: `jsonlog:\n  enabled: true\n  path: "${path}"`, metrics: false }),
    'conf.d/dns.yaml': udpListener(`127.0.0.1:${echo}`, 'udp:\n  session_timeout: "1s"\n'),
  });
  const replies = await udpExchange(t, await daemon.port('dns'), [Buffer.alloc(100, 1), Buffer.alloc(200, 2), Buffer.alloc(300, 3)]);
  t.deepEqual(replies.map((r) => r.length), [100, 200, 300]);
  const close = await waitFor(() => jsonLines(path).find((e) => e.listener_name === 'dns' && e.event_type === 'close'), 'the session close event', 15_000);
  t.deepEqual(Object.keys(close), [...CONNECTION_KEYS.slice(0, 10), 'packets_sent', 'packets_received', 'duration_ms']);
  t.like(close, { protocol: 'udp', target_port: echo, bytes_sent: 600, bytes_received: 600, packets_sent: 3, packets_received: 3 });
  t.regex(await daemon.waitForLine(/Connection closed: listener=dns /), /bytes_sent=600 bytes_recv=600 pkts_sent=3 pkts_recv=3$/);
});

test.serial('syslog over udp: RFC 3164 with host name, the tag and the daemon PID, facility daemon', async (t) => {
  const receiver = await syslogUdpReceiver(t);
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile({ logging: `syslog:\n  enabled: true\n  network: udp\n  address: "127.0.0.1:${receiver.port}"\n  tag: pptest\n  priority: info`, metrics: false }),
    'conf.d/s1.yaml': tcpListener(`127.0.0.1:${echo}`),
  });
  const { localPort } = await roundTrip(await daemon.port('s1'));
  const close = await waitFor(() => receiver.messages.find((m) => m.includes('event=close')), 'the close event over syslog');
  const header = `<30>[A-Z][a-z]{2} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d ${hostname()} pptest\\[${daemon.pid}\\]: `;
  t.regex(close, new RegExp(`^${header}listener=s1 proto=tcp event=close src=127\\.0\\.0\\.1:${localPort} dst=127\\.0\\.0\\.1:${echo} duration=\\d+ms bytes_sent=4 bytes_recv=4$`));
  t.regex(receiver.messages.find((m) => m.includes('event=open'))!, new RegExp(`^${header}listener=s1 proto=tcp event=open src=127\\.0\\.0\\.1:${localPort} dst=127\\.0\\.0\\.1:${echo}$`));
  t.regex(receiver.messages.find((m) => m.includes('listener s1 up'))!, new RegExp(`^${header}listener s1 up listener=s1 protocol=tcp`));
});

test.serial('syslog over tcp with priority "warning": denials arrive (severity warning), connection events do not', async (t) => {
  const receiver = await syslogTcpReceiver(t);
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile({ logging: `syslog:\n  enabled: true\n  network: tcp\n  address: "127.0.0.1:${receiver.port}"\n  tag: ppwarn\n  priority: warn`, metrics: false }),
    'conf.d/open.yaml': tcpListener(`127.0.0.1:${echo}`),
    'conf.d/locked.yaml': tcpListener(`127.0.0.1:${echo}`, '', '["192.0.2.0/24"]'),
  });
  await roundTrip(await daemon.port('open'));
  await daemon.waitForLine(/Connection closed: listener=open /);
  const { default: net } = await import('node:net');
  // The child resets a denied connection, maybe before our connect completes.
  net.connect(await daemon.port('locked'), '127.0.0.1').on('error', () => {}).resume();
  const denied = await waitFor(() => receiver.messages.find((m) => m.includes('event=deny')), 'the denial over syslog');
  t.regex(denied, new RegExp(`^<28>[A-Z][a-z]{2} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d ${hostname()} ppwarn\\[${daemon.pid}\\]: listener=locked proto=tcp event=deny src=127\\.0\\.0\\.1:\\d+ reason=acl action=deny$`));
  // Everything reaches the sink in order: had open/close or "listener up" (info) passed the filter,
  // they would be in the stream before the denial.
  t.false(receiver.messages.some((m) => / event=(open|close) |listener \S+ up/.test(m)), receiver.messages.join('\n'));
});

test.serial('syslog on a local datagram socket: glibc-style lines without host name', async (t) => {
  const receiver = unixReceiver(t);
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile({ logging: `syslog:\n  enabled: true\n  network: unix\n  address: "${receiver.path}"\n  tag: pplocal`, metrics: false }),
    'conf.d/u1.yaml': tcpListener(`127.0.0.1:${echo}`),
  });
  const { localPort } = await roundTrip(await daemon.port('u1'));
  const close = await waitFor(() => receiver.messages.find((m) => m.includes('event=close')), 'the close event on the socket');
  t.regex(close, new RegExp(`^<30>[A-Z][a-z]{2} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d pplocal\\[${daemon.pid}\\]: listener=u1 proto=tcp event=close src=127\\.0\\.0\\.1:${localPort} dst=127\\.0\\.0\\.1:${echo} duration=\\d+ms bytes_sent=4 bytes_recv=4$`));
});

test.serial('SIGUSR1 after the log file was renamed: the old file keeps what was written, the new one gets the rest, no line lost', async (t) => {
  const echo = await startEchoServer(t);
  const path = join(tempDir(t), 'events.json');
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile({ logging: `jsonlog:\n  enabled: true\n  path: "${path}"`, metrics: false }),
    'conf.d/rot.yaml': tcpListener(`127.0.0.1:${echo}`),
  });
  const port = await daemon.port('rot');
  const closes = (file: string): number[] => jsonLines(file).filter((e) => e.event_type === 'close').map((e) => e.source_port as number);

  const before: number[] = [];
  for (let i = 0; i < 20; i++) before.push((await roundTrip(port)).localPort);
  await waitFor(() => closes(path).length === 20, '20 close events in the file');
  renameSync(path, `${path}.1`);
  process.kill(daemon.pid, 'SIGUSR1');
  await waitFor(() => jsonLines(path).some((e) => e.message === 'SIGUSR1 received: log files reopened'), 'the reopened file');
  const after: number[] = [];
  for (let i = 0; i < 20; i++) after.push((await roundTrip(port)).localPort);
  await waitFor(() => closes(path).length === 20, '20 close events in the new file');

  t.deepEqual(closes(`${path}.1`), before);
  t.deepEqual(closes(path), after);
  t.false(jsonLines(`${path}.1`).some((e) => e.message === 'SIGUSR1 received: log files reopened'));
});

test.serial('a JSON log folder that does not exist: exit 1 before anything runs, naming the path', async (t) => {
  const missing = join(tempDir(t), 'not-there', 'events.json');
  const dir = configDir(t, {
    'packetpony.yaml': mainFile({ logging: `jsonlog:\n  enabled: true\n  path: "${missing}"`, metrics: false }),
    'conf.d/any.yaml': tcpListener('127.0.0.1:9'),
  });
  const result = await runCli(['--config', join(dir, 'packetpony.yaml')]);
  t.is(result.code, 1);
  t.is(result.stderr, `packetpony: cannot open the JSON log file ${missing} (logging.jsonlog.path) for appending: ENOENT: no such file or directory: its folder does not exist; create it\n`);
  t.false(result.stdout.includes('listener any up'), 'no listener was started');
});

test.serial('a full disk under the JSON file is reported once and counted; proxying goes on', async (t) => {
  if (!existsSync('/dev/full')) return t.pass('no /dev/full here');
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile({ logging: 'jsonlog:\n  enabled: true\n  path: /dev/full' }),
    'conf.d/full.yaml': tcpListener(`127.0.0.1:${echo}`),
  });
  const port = await daemon.port('full');
  for (let i = 0; i < 10; i++) t.is((await roundTrip(port, `n${i}`)).reply.toString(), `n${i}`);
  await waitFor(() => daemon.lines.filter((l) => l.includes('Connection closed: listener=full')).length === 10, '10 close lines on stdout');
  const metrics = await metricsPort(daemon);
  await waitFor(async () => ((await scrape(metrics)).get('packetpony_log_events_dropped_total{sink="jsonlog"}') ?? 0) >= 20, 'the dropped events counted');
  t.is(daemon.stderr().match(/log sink jsonlog: cannot write to \/dev\/full: ENOSPC/g)?.length, 1, daemon.stderr());
  t.is(daemon.lines.filter((l) => l.includes('[ERROR] log sink jsonlog: cannot write to /dev/full: ENOSPC')).length, 1);
});

test.serial('a syslog server that stops: proxying is not held up, the queue is bounded, drops are counted', async (t) => {
  const receiver = await syslogTcpReceiver(t);
  const echo = await udpEcho(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile({ logging: `syslog:\n  enabled: true\n  network: tcp\n  address: "127.0.0.1:${receiver.port}"` }),
    // An update event per datagram each way: a cheap way to produce many events.
    'conf.d/chatty.yaml': udpListener(`127.0.0.1:${echo}`, 'udp:\n  logging:\n    periodic_log_bytes: "1B"\n'),
  });
  const port = await daemon.port('chatty');
  await udpExchange(t, port, [Buffer.from('hello')]);
  await waitFor(() => receiver.messages.some((m) => m.includes('event=update')), 'events reaching the syslog server');
  await receiver.stop();

  // 12,000 datagrams each way: 24,000 events, well beyond the sink's queue of 10,000.
  const { SINK_QUEUE_CAPACITY } = await import('../../src/telemetry/sinks/sink-queue.js');
  const count = 12_000;
  t.true(count * 2 > SINK_QUEUE_CAPACITY + 1000);
  const replies = await udpExchange(t, port, Array.from({ length: count }, (_, i) => Buffer.from(`d${i}`)), 64);
  t.is(replies.length, count, 'every datagram was relayed while syslog was down');

  const metrics = await metricsPort(daemon);
  await waitFor(async () => ((await scrape(metrics)).get('packetpony_log_events_dropped_total{sink="syslog"}') ?? 0) > 0, 'syslog drops counted', 30_000);
  t.regex(daemon.stderr(), new RegExp(`log sink syslog: cannot send to tcp 127\\.0\\.0\\.1:${receiver.port}: `));
  t.is((await fetch(`http://127.0.0.1:${metrics}/health`)).status, 200, 'the supervisor answers');
  // stdout, a sink that keeps up, lost nothing.
  await waitFor(() => daemon.lines.filter((l) => l.includes('Connection update: listener=chatty')).length >= count * 2, 'every update line on stdout', 30_000);
});

test.serial('a metrics address in use: exit 1 with a clear message', async (t) => {
  const net = await import('node:net');
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  t.teardown(() => blocker.close());
  const port = (blocker.address() as import('node:net').AddressInfo).port;
  const dir = configDir(t, {
    'packetpony.yaml': `logging:\n  stdout:\n    enabled: true\nmetrics:\n  prometheus:\n    enabled: true\n    listen_address: "127.0.0.1:${port}"\n`,
    'conf.d/any.yaml': tcpListener('127.0.0.1:9'),
  });
  const result = await runCli(['--config', join(dir, 'packetpony.yaml')]);
  t.is(result.code, 1);
  t.is(result.stderr, `packetpony: cannot listen on 127.0.0.1:${port} (metrics.prometheus.listen_address): EADDRINUSE: another program uses it\n`);
  t.false(result.stdout.includes('listener any up'), 'no listener was started');
});


test.serial('shutdown writes out what the sinks hold, and a dead syslog server does not hold the exit up', async (t) => {
  const receiver = await syslogTcpReceiver(t);
  const echo = await startEchoServer(t);
  const dead = await refusingPort(t);
  const dir = tempDir(t);
  const start = (name: string, syslogPort: number): ReturnType<typeof startDaemon> =>
    startDaemon(t, {
      'packetpony.yaml': mainFile({ logging: `jsonlog:\n  enabled: true\n  path: "${join(dir, `${name}.json`)}"\nsyslog:\n  enabled: true\n  network: tcp\n  address: "127.0.0.1:${syslogPort}"`, metrics: false }),
      [`conf.d/${name}.yaml`]: tcpListener(`127.0.0.1:${echo}`),
    });
  const [alive, orphan] = await Promise.all([start('alive', receiver.port), start('orphan', dead)]);
  await Promise.all([alive.port('alive'), orphan.port('orphan')]);
  await roundTrip(await alive.port('alive'));
  process.kill(alive.pid, 'SIGTERM');
  process.kill(orphan.pid, 'SIGTERM');
  t.deepEqual(await alive.exited, { code: 0, signal: null });
  t.deepEqual(await orphan.exited, { code: 0, signal: null });
  for (const name of ['alive', 'orphan']) {
    t.is(jsonLines(join(dir, `${name}.json`)).at(-1)!.message, 'packetpony stopped', name);
  }
  t.regex(receiver.messages.at(-1)!, /packetpony\[\d+\]: packetpony stopped$/);
  t.true(receiver.messages.some((m) => m.includes('event=close')));
  t.regex(orphan.stderr(), /log sink syslog: cannot send to tcp 127\.0\.0\.1:\d+: .*ECONNREFUSED/);
});
