/**
 * Reliability case 13 — log plumbing under load.
 *
 * Pass criteria:
 * - SIGUSR1 rotation during EVENTS_PER_S events/s (UDP update events, one per datagram forwarded):
 *   the rotated files and the current one together hold exactly one line per event — every
 *   update event the child counted is there once, none lost, none twice — and no sink dropped any;
 * - syslog down, TCP and UDP: the proxy's throughput (short TCP connections per second, two events
 *   each) with the server down is at least half of what it was with the server up (the proxy never
 *   waits for logging; half is a generous bound for a shared two-core machine); over TCP the events
 *   beyond the 10,000-event queue are dropped and counted, and once the server is back the sink
 *   reconnects and delivers again; over UDP a down server cannot be detected (documented), and
 *   delivery resumes when it is back.
 */
import test from 'ava';
import dgram from 'node:dgram';
import { readdirSync, readFileSync, renameSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { sample } from '../helpers/metrics.js';
import { startEchoServer } from '../helpers/servers.js';
import { waitFor } from '../helpers/wait-for.js';
import { mainFile, tcpListener, udpListener } from '../helpers/reliability/config.js';
import { size } from '../helpers/reliability/scale.js';
import { tempDir } from '../helpers/reliability/temp.js';

const EVENTS_PER_S = 5000;
const ROTATE_FOR_S = size(10, 60);

async function scrapeText(daemon: Daemon): Promise<string> {
  const line = await daemon.waitForLine(/metrics server started address=\S+:\d+/);
  const port = Number(/address=\S+:(\d+)/.exec(line)![1]);
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

test.serial(`SIGUSR1 rotation every second for ${ROTATE_FOR_S} s at ${EVENTS_PER_S} events/s: no event lost or written twice`, async (t) => {
  t.timeout((ROTATE_FOR_S + 90) * 1000);
  const echo = dgram.createSocket('udp4');
  echo.on('message', (msg, from) => echo.send(msg, from.port, from.address));
  await new Promise<void>((resolve) => echo.bind(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => echo.close(() => resolve())));
  const logs = tempDir(t);
  const path = join(logs, 'events.json');
  const daemon = await startDaemon(t, {
    'packetpony.yaml': `${mainFile({ metrics: true })}`.replace('logging:\n  stdout:\n    enabled: true\n', `logging:\n  stdout:\n    enabled: true\n  jsonlog:\n    enabled: true\n    path: "${path}"\n`),
    'conf.d/chatty.yaml': udpListener(`127.0.0.1:${echo.address().port}`, 'udp:\n  logging:\n    periodic_log_bytes: "1B"\n    log_session_start: false\n'),
  });
  const port = await daemon.port('chatty');
  const client = dgram.createSocket('udp4');
  client.on('message', () => {});
  await new Promise<void>((resolve) => client.bind(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => client.close(() => resolve())));

  // EVENTS_PER_S / 2 datagrams a second: each makes an update event each way.
  const perTick = EVENTS_PER_S / 2 / 100;
  const pump = setInterval(() => {
    for (let i = 0; i < perTick; i++) client.send('tick', port, '127.0.0.1');
  }, 10);
  t.teardown(() => clearInterval(pump));
  let rotations = 0;
  const end = Date.now() + ROTATE_FOR_S * 1000;
  while (Date.now() < end) {
    await waitFor(() => Date.now() >= end - (ROTATE_FOR_S - rotations - 1) * 1000 || undefined, 'the next second', 5000);
    renameSync(path, `${path}.${++rotations}`);
    process.kill(daemon.pid, 'SIGUSR1');
  }
  clearInterval(pump);

  const updates = (): number =>
    readdirSync(logs)
      .map((name) => readFileSync(join(logs, name), 'utf8').split('\n').filter((l) => l.includes('"event_type":"update"')).length)
      .reduce((a, b) => a + b, 0);
  let expected = 0;
  let text = '';
  const lines = await waitFor(async () => {
    text = await scrapeText(daemon);
    expected = sample(text, 'packetpony_packets_transferred_total', { listener: 'chatty', direction: 'sent' }) + sample(text, 'packetpony_packets_transferred_total', { listener: 'chatty', direction: 'received' });
    const found = updates();
    return found === expected && expected > 0 ? found : undefined;
  }, 'every update event in the files', 30_000).catch(() => updates());
  const files = readdirSync(logs).length;
  const dropped = ['jsonlog', 'stdout', 'ipc'].map((sink) => sample(text, 'packetpony_log_events_dropped_total', { sink }));
  const duplicates = (() => {
    const seen = new Set<string>();
    let twice = 0;
    for (const name of readdirSync(logs)) {
      for (const line of readFileSync(join(logs, name), 'utf8').split('\n')) {
        if (!line.includes('"event_type":"update"')) continue;
        if (seen.has(line)) twice++;
        seen.add(line);
      }
    }
    return twice;
  })();
  t.log(`${rotations} rotations in ${ROTATE_FOR_S} s, ${files} files; update events counted by the child ${expected} (${(expected / ROTATE_FOR_S).toFixed(0)}/s), lines found ${lines}, identical lines ${duplicates}; dropped (jsonlog, stdout, ipc): ${dropped.join(', ')}`);
  t.is(lines, expected);
  t.is(dropped[0], 0);
  t.is(dropped[2], 0);
  t.true(expected >= EVENTS_PER_S * ROTATE_FOR_S * 0.8, `only ${expected} events were generated`);
});

/** Short TCP connections through the proxy, `parallel` at a time, for `ms`: returns how many completed. */
async function churn(port: number, ms: number, parallel = 16): Promise<number> {
  let done = 0;
  const end = performance.now() + ms;
  const loop = async (): Promise<void> => {
    while (performance.now() < end) {
      await new Promise<void>((resolve) => {
        const socket = net.connect(port, '127.0.0.1');
        socket.on('error', () => resolve());
        socket.on('data', () => socket.end());
        socket.on('close', () => resolve());
        socket.on('connect', () => socket.write('x'));
      });
      done++;
    }
  };
  await Promise.all(Array.from({ length: parallel }, loop));
  return done;
}

for (const network of ['tcp', 'udp'] as const) {
  test.serial(`syslog over ${network} down: proxy throughput at least half of what it is with the server up${network === 'tcp' ? ', drops counted, the sink reconnects' : ', delivery resumes when it is back'}`, async (t) => {
    t.timeout(180_000);
    const phaseMs = size(5000, 20_000);
    const echo = await startEchoServer(t);
    // The syslog server: one port for the whole test, stopped and started again.
    const received: string[] = [];
    let stop: () => Promise<void> = async () => {};
    let port = 0;
    const start = async (): Promise<void> => {
      if (network === 'tcp') {
        const sockets = new Set<net.Socket>();
        const server = net.createServer((socket) => {
          sockets.add(socket);
          socket.on('close', () => sockets.delete(socket));
          socket.on('error', () => {});
          socket.setEncoding('utf8').on('data', (chunk: string) => received.push(...chunk.split('\n').filter(Boolean)));
        });
        await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
        port = (server.address() as net.AddressInfo).port;
        stop = () => new Promise<void>((resolve) => {
          for (const s of sockets) s.destroy();
          server.close(() => resolve());
        });
      } else {
        const socket = dgram.createSocket('udp4');
        socket.on('message', (msg) => received.push(msg.toString()));
        await new Promise<void>((resolve) => socket.bind(port, '127.0.0.1', resolve));
        port = socket.address().port;
        stop = () => new Promise<void>((resolve) => socket.close(() => resolve()));
      }
    };
    await start();
    t.teardown(() => stop());
    const daemon = await startDaemon(t, {
      'packetpony.yaml': mainFile({ metrics: true, extraLogging: `syslog:\n  enabled: true\n  network: ${network}\n  address: "127.0.0.1:${port}"\n  tag: rel` }),
      'conf.d/busy.yaml': tcpListener(`127.0.0.1:${echo}`),
    });
    const proxy = await daemon.port('busy');
    await waitFor(() => received.some((m) => m.includes('listener busy up')) || undefined, 'the syslog server to get the start-up lines');

    const up = await churn(proxy, phaseMs);
    await stop();
    const down = await churn(proxy, phaseMs);
    // Enough events while down to overflow the sink's 10,000-event queue (tcp only detects it).
    let extra = 0;
    if (network === 'tcp') {
      while (extra + down < 6000) extra += await churn(proxy, 1000);
    }
    const text = await scrapeText(daemon);
    const dropped = sample(text, 'packetpony_log_events_dropped_total', { sink: 'syslog' });
    const before = received.length;
    await start();
    // New traffic after the server is back: its events must arrive.
    await waitFor(async () => {
      await churn(proxy, 200, 2);
      return received.slice(before).some((m) => m.includes('event=close')) || undefined;
    }, 'events to reach the syslog server again', 30_000);
    const notice = network === 'tcp' ? await daemon.waitForLine(/log sink syslog: .* takes events again; \d+ were dropped meanwhile/, 30_000) : '';
    t.log(`${network}: ${up} connections in ${phaseMs / 1000} s with the server up, ${down} with it down (${((down / up) * 100).toFixed(0)} %); ${extra} more while down; events dropped and counted: ${dropped}`);
    if (notice) t.log(`then: ${notice.replace(/^\[[^\]]+\] /, '')}`);
    t.true(down >= up * 0.5, `${down} vs ${up}`);
    if (network === 'tcp') t.true(dropped > 0, 'no drop was counted');
    t.is(daemon.process.exitCode, null);
  });
}
