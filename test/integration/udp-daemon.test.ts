/**
 * The daemon end to end over UDP (issue 4): sessions per client ip:port, replies, idle timeout,
 * session logging and its thresholds, oversize datagrams, an unreachable target, shutdown. Real
 * supervisor and child processes, loopback only.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { startDaemon } from '../helpers/daemon.js';
import { connectionLines, numberField, sourcePort, waitForConnectionLines } from '../helpers/log-lines.js';
import { MAIN_FILE_WITH_METRICS, waitForSample } from '../helpers/metrics.js';
import { slots } from '../helpers/slots.js';
import { startUdpBackend, udpClient, unreachableUdpPort } from '../helpers/udp.js';
import { alive, waitFor } from '../helpers/wait-for.js';
import { PUBLIC_PATH } from '../helpers/platform-path.js';

/** Daemons of this file running at once (see slots.ts). */
const slot = slots(3);

function udpListener(target: string, udp = '', listen = '127.0.0.1:0'): string {
  return `protocol: udp\nlisten_address: "${listen}"\ntarget_address: "${target}"\nallowlist: ["127.0.0.0/8", "::1"]\n${udp ? `udp:\n${udp}` : ''}`;
}

test('20 concurrent sessions from distinct source ports each get only their own replies', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t);
  const daemon = await startDaemon(t, { 'conf.d/many.yaml': udpListener(`127.0.0.1:${backend.port}`) });
  const port = await daemon.port('many');
  const clients = await Promise.all(Array.from({ length: 20 }, () => udpClient(t, port)));
  const rounds = 5;
  for (let round = 0; round < rounds; round++) {
    // Every client sends at once; the round ends when each has its reply.
    clients.forEach((client, i) => client.send(`client ${i} port ${client.localPort} round ${round}`));
    await Promise.all(clients.map((client) => client.reply(round)));
  }
  clients.forEach((client, i) => {
    const expected = Array.from({ length: rounds }, (_, round) => `client ${i} port ${client.localPort} round ${round}`);
    t.deepEqual(client.replies.map(String).sort(), expected.sort(), `client ${i} got exactly its own replies`);
  });
  // One session, hence one upstream socket, per client.
  t.is(new Set(backend.received.map((d) => d.port)).size, 20);
  const opened = await waitForConnectionLines(daemon, 'opened', 'many', 20);
  t.deepEqual(opened.map(sourcePort).sort(), clients.map((c) => c.localPort).sort());
  t.true(opened.every((l) => / protocol=udp src=127\.0\.0\.1:\d+ dst=127\.0\.0\.1:\d+$/.test(l)), opened.join('\n'));
  // The public path has no batched path (it reads through dgram): it says so, plainly.
  const announced = daemon.lines.filter((l) => l.includes("UDP goes through Node's dgram"));
  if (PUBLIC_PATH) t.regex(announced[0] ?? '', /\[INFO\] .*PACKETPONY_PUBLIC_PATH=1/);
  else t.deepEqual(announced, [], 'the batched path, unannounced');
});

test("PACKETPONY_UDP_BATCH=0: Node's path, said once in the log, relaying the same", async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t);
  const daemon = await startDaemon(t, { 'conf.d/plain.yaml': udpListener(`127.0.0.1:${backend.port}`) }, [], { PACKETPONY_UDP_BATCH: '0' });
  const client = await udpClient(t, await daemon.port('plain'));
  t.is(String(await client.request('through dgram')), 'through dgram');
  const line = await daemon.waitForLine(/listener plain: UDP goes through Node's dgram sockets/);
  t.regex(line, /\[INFO\] .*turned off by PACKETPONY_UDP_BATCH=0/);
});

test('IPv6 on both sides', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t, { host: '::1' });
  const daemon = await startDaemon(t, { 'conf.d/v6.yaml': udpListener(`[::1]:${backend.port}`, '', '[::1]:0') });
  const client = await udpClient(t, await daemon.port('v6'), { host: '::1' });
  t.is(String(await client.request('over IPv6')), 'over IPv6');
  t.is(String(await client.request('again')), 'again');
  const [open] = await waitForConnectionLines(daemon, 'opened', 'v6', 1);
  t.regex(open!, new RegExp(`protocol=udp src=\\[::1\\]:${client.localPort} dst=\\[::1\\]:${backend.port}$`));
  t.is(new Set(backend.received.map((d) => d.port)).size, 1, 'both datagrams went through one session');
});

test('an idle session ends with a close event carrying its counts; the next datagram opens a new session', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t);
  const daemon = await startDaemon(t, { 'conf.d/idle.yaml': udpListener(`127.0.0.1:${backend.port}`, '  session_timeout: "500ms"\n') });
  const client = await udpClient(t, await daemon.port('idle'));
  for (const text of ['one', 'two', 'three!']) t.is(String(await client.request(text)), text);
  const [close] = await waitForConnectionLines(daemon, 'closed', 'idle', 1, client.localPort);
  t.regex(close!, /protocol=udp src=127\.0\.0\.1:\d+ dst=127\.0\.0\.1:\d+ duration=\d+ms bytes_sent=12 bytes_recv=12 pkts_sent=3 pkts_recv=3$/);
  t.true(numberField(close!, 'duration') >= 500, close);

  t.is(String(await client.request('four')), 'four');
  const opens = await waitForConnectionLines(daemon, 'opened', 'idle', 2, client.localPort);
  t.is(opens.length, 2);
  const upstreamPorts = backend.received.map((d) => d.port);
  t.is(upstreamPorts[0], upstreamPorts[2], 'one upstream socket for the first session');
  t.not(upstreamPorts[3], upstreamPorts[0], 'a new upstream socket for the new session');
  const closes = await waitForConnectionLines(daemon, 'closed', 'idle', 2, client.localPort);
  t.regex(closes[1]!, /bytes_sent=4 bytes_recv=4 pkts_sent=1 pkts_recv=1$/);
});

test('periodic update events: by interval, and by bytes moved', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t);
  const daemon = await startDaemon(t, {
    'conf.d/ticks.yaml': udpListener(`127.0.0.1:${backend.port}`, '  session_timeout: "30s"\n  logging:\n    periodic_log_interval: "300ms"\n'),
    'conf.d/bulk.yaml': udpListener(
      `127.0.0.1:${backend.port}`,
      '  session_timeout: "30s"\n  logging:\n    periodic_log_interval: "0s"\n    periodic_log_bytes: "2KB"\n',
    ),
  });
  const ticking = await udpClient(t, await daemon.port('ticks'));
  await ticking.request('tick');
  const [first] = await waitForConnectionLines(daemon, 'update', 'ticks', 1);
  t.regex(first!, /bytes_sent=4 bytes_recv=4 pkts_sent=1 pkts_recv=1$/);
  await ticking.request('tock');
  const updates = await waitFor(
    () => connectionLines(daemon, 'update', 'ticks').find((l) => l.endsWith('pkts_sent=2 pkts_recv=2')),
    'an update after the second exchange',
  );
  t.truthy(updates);
  t.is(connectionLines(daemon, 'closed', 'ticks').length, 0, 'updates, not closes: the session lives on');

  // 500 bytes each way per exchange: 2,048 bytes are crossed by the request of the third exchange.
  const bulk = await udpClient(t, await daemon.port('bulk'));
  for (let i = 0; i < 5; i++) await bulk.request(Buffer.alloc(500, 0x41 + i));
  const bytesUpdates = await waitForConnectionLines(daemon, 'update', 'bulk', 2);
  t.regex(bytesUpdates[0]!, /bytes_sent=1500 bytes_recv=1000 pkts_sent=3 pkts_recv=2$/, 'the first update comes exactly when 2KB are crossed');
  // The count restarts there: the next 2,048 bytes are crossed by the reply of the fifth exchange.
  t.regex(bytesUpdates[1]!, /bytes_sent=2500 bytes_recv=2500 pkts_sent=5 pkts_recv=5$/);
});

test('session logging: start and close suppressed, min_log_duration and min_log_bytes', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t);
  const target = `127.0.0.1:${backend.port}`;
  const daemon = await startDaemon(t, {
    'conf.d/nostart.yaml': udpListener(target, '  session_timeout: "300ms"\n  logging:\n    log_session_start: false\n'),
    'conf.d/noclose.yaml': udpListener(target, '  session_timeout: "300ms"\n  logging:\n    log_session_close: false\n'),
    'conf.d/longonly.yaml': udpListener(target, '  session_timeout: "500ms"\n  logging:\n    min_log_duration: "1500ms"\n'),
    'conf.d/bigonly.yaml': udpListener(target, '  session_timeout: "300ms"\n  logging:\n    min_log_bytes: "1KB"\n'),
  });

  const quiet = await udpClient(t, await daemon.port('nostart'));
  await quiet.request('hello');
  const [closed] = await waitForConnectionLines(daemon, 'closed', 'nostart', 1);
  t.regex(closed!, /pkts_sent=1 pkts_recv=1$/);
  t.is(connectionLines(daemon, 'opened', 'nostart').length, 0, 'no open event, though the close came after it would have');

  const noClose = await udpClient(t, await daemon.port('noclose'));
  await noClose.request('first session');
  await waitForConnectionLines(daemon, 'opened', 'noclose', 1);
  // A second open from the same client port proves the first session ended. The client comes back
  // after pauses longer than session_timeout (plus a sweep), so its datagrams cannot keep it alive.
  await waitFor(async () => {
    await new Promise((resolve) => setTimeout(resolve, 600));
    await noClose.request('probe');
    return connectionLines(daemon, 'opened', 'noclose').length >= 2;
  }, 'a second session of the same client');
  t.is(connectionLines(daemon, 'closed', 'noclose').length, 0);

  // min_log_duration: a one-datagram session ends after ~500 ms, unlogged; one kept busy for over
  // 1.5 s is logged. Both idle out in the same sweep or the short one earlier, so its close would
  // be printed before the long one's.
  const shortLived = await udpClient(t, await daemon.port('longonly'));
  const longLived = await udpClient(t, await daemon.port('longonly'));
  await shortLived.request('brief');
  const busyUntil = performance.now() + 1700;
  while (performance.now() < busyUntil) {
    await longLived.request('still here');
    await new Promise((resolve) => setTimeout(resolve, 100)); // the client's pace, not synchronisation
  }
  const [longClose] = await waitForConnectionLines(daemon, 'closed', 'longonly', 1, longLived.localPort);
  t.true(numberField(longClose!, 'duration') >= 1500, longClose);
  t.is(connectionLines(daemon, 'closed', 'longonly', shortLived.localPort).length, 0, 'the short session is not logged');
  t.is(connectionLines(daemon, 'opened', 'longonly').length, 2, 'open events know nothing of the thresholds');

  // min_log_bytes: 10 bytes each way are not logged, 600 each way are.
  const small = await udpClient(t, await daemon.port('bigonly'));
  const large = await udpClient(t, await daemon.port('bigonly'));
  await small.request('0123456789');
  await large.request(Buffer.alloc(600, 0x42));
  const [bigClose] = await waitForConnectionLines(daemon, 'closed', 'bigonly', 1, large.localPort);
  t.regex(bigClose!, /bytes_sent=600 bytes_recv=600 pkts_sent=1 pkts_recv=1$/);
  t.is(connectionLines(daemon, 'closed', 'bigonly', small.localPort).length, 0, 'the small session is not logged');
});

test('a datagram larger than buffer_size is dropped whole, either way, and reported', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t, { respond: (data) => (String(data) === 'send me a big one' ? Buffer.alloc(1000, 0x62) : data) });
  const target = `127.0.0.1:${backend.port}`;
  const daemon = await startDaemon(t, {
    'packetpony.yaml': MAIN_FILE_WITH_METRICS,
    'conf.d/bigin.yaml': udpListener(target, '  buffer_size: 512\n  session_timeout: "300ms"\n'),
    'conf.d/bigout.yaml': udpListener(target, '  buffer_size: 512\n  session_timeout: "300ms"\n'),
  });

  const client = await udpClient(t, await daemon.port('bigin'));
  client.send(Buffer.alloc(1000, 0x61));
  client.send(Buffer.alloc(512, 0x63)); // exactly buffer_size passes
  t.is((await client.reply(0)).length, 512);
  t.is((await client.request('small')).toString(), 'small');
  t.deepEqual(backend.received.map((d) => d.data.length), [512, 5], 'the backend never saw the oversize datagram, whole or cut');
  const warning = await daemon.waitForLine(/\[WARNING\] listener bigin: dropped a datagram/);
  t.regex(warning, new RegExp(`from client 127\\.0\\.0\\.1:${client.localPort} larger than udp\\.buffer_size \\(512 bytes\\)`));
  const [close] = await waitForConnectionLines(daemon, 'closed', 'bigin', 1);
  t.regex(close!, /bytes_sent=517 bytes_recv=517 pkts_sent=2 pkts_recv=2$/);

  const asker = await udpClient(t, await daemon.port('bigout'));
  asker.send('send me a big one');
  t.is((await asker.request('after')).toString(), 'after');
  t.deepEqual(asker.replies.map(String), ['after'], 'the oversize reply was not forwarded');
  const back = await daemon.waitForLine(/\[WARNING\] listener bigout: dropped a datagram/);
  t.regex(back, new RegExp(`from the target \\(for 127\\.0\\.0\\.1:${asker.localPort}\\) larger than udp\\.buffer_size \\(512 bytes\\)`));
  const [outClose] = await waitForConnectionLines(daemon, 'closed', 'bigout', 1);
  t.regex(outClose!, /bytes_sent=22 bytes_recv=5 pkts_sent=2 pkts_recv=1$/);
  for (const listener of ['bigin', 'bigout']) {
    t.is(await waitForSample(daemon, 'packetpony_errors_total', { listener, type: 'oversize_datagram' }, 1), 1, `${listener}: counted as an error`);
  }
});

// The value people write for "the largest datagram" (issue 21): the largest datagrams IPv4 and
// IPv6 can carry go through whole, both ways, on the batched path and on Node's.
for (const [path, env] of [['the batched path', {}], ["Node's dgram path", { PACKETPONY_UDP_BATCH: '0' }]] as const) {
  test(`buffer_size 65536 ("64KB"): 65,507 bytes over IPv4 and 65,527 over IPv6 arrive and come back whole (${path})`, async (t) => {
    await slot(t);
    const v4 = await startUdpBackend(t);
    const v6 = await startUdpBackend(t, { host: '::1' });
    const daemon = await startDaemon(t, {
      'conf.d/big4.yaml': udpListener(`127.0.0.1:${v4.port}`, '  buffer_size: 65536\n'),
      'conf.d/big6.yaml': udpListener(`[::1]:${v6.port}`, '  buffer_size: "64KB"\n', '[::1]:0'),
    }, [], env);
    for (const [name, backend, host, size] of [['big4', v4, '127.0.0.1', 65_507], ['big6', v6, '::1', 65_527]] as const) {
      const client = await udpClient(t, await daemon.port(name), { host });
      const largest = randomBytes(size);
      const back = await client.request(largest);
      t.is(back.length, size, `${name}: the echo came back whole`);
      t.true(back.equals(largest), `${name}: byte for byte`);
      t.deepEqual(backend.received.map((d) => d.data.length), [size], `${name}: the backend got it once, whole`);
    }
    t.false(daemon.lines.some((l) => l.includes('larger than udp.buffer_size')), 'nothing was called oversize');
  });
}

test('an unreachable target (ICMP port unreachable) keeps the sessions and the child; service resumes when it comes back', async (t) => {
  await slot(t);
  const target = await unreachableUdpPort(t);
  const daemon = await startDaemon(t, { 'conf.d/gone.yaml': udpListener(`127.0.0.1:${target.port}`, '  session_timeout: "30s"\n') });
  const port = await daemon.port('gone');
  const pid = await daemon.childPid('gone');
  const a = await udpClient(t, port);
  const b = await udpClient(t, port, { localAddress: '127.0.0.2' });
  a.send('a1');
  const warning = await daemon.waitForLine(/\[WARNING\] listener gone: target (read|write) error/);
  t.regex(warning, /ECONNREFUSED/);
  // More datagrams into the void, from the same session and a new one: nothing may break.
  a.send('a2');
  b.send('b1');
  a.send('a3');
  await waitForConnectionLines(daemon, 'opened', 'gone', 2);

  const backend = await target.serve();
  t.is((await a.request('a4')).toString(), 'a4');
  t.is((await b.request('b2')).toString(), 'b2');
  t.true(alive(pid));
  t.is(await daemon.childPid('gone'), pid, 'the same child serves on');
  t.is(daemon.lines.filter((l) => l.includes('listener gone up ')).length, 1, 'no restart');
  t.is(connectionLines(daemon, 'opened', 'gone', a.localPort).length, 1, 'client a kept its session');
  t.is(connectionLines(daemon, 'opened', 'gone', b.localPort).length, 1, 'client b kept its session');
  t.deepEqual(backend.received.map((d) => String(d.data)), ['a4', 'b2']);
});

test('SIGTERM ends every session with a close event and exits 0', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t);
  const daemon = await startDaemon(t, { 'conf.d/stop.yaml': udpListener(`127.0.0.1:${backend.port}`) });
  const port = await daemon.port('stop');
  const clients = await Promise.all(Array.from({ length: 5 }, (_, i) => udpClient(t, port, { localAddress: `127.0.0.${i + 1}` })));
  for (const client of clients) {
    await client.request('ping');
    await client.request('pong!');
  }
  await waitForConnectionLines(daemon, 'opened', 'stop', 5);
  process.kill(daemon.pid, 'SIGTERM');
  const { code } = await daemon.exited;
  t.is(code, 0);
  const closes = connectionLines(daemon, 'closed', 'stop');
  t.is(closes.length, 5, daemon.lines.join('\n'));
  t.deepEqual(closes.map(sourcePort).sort(), clients.map((c) => c.localPort).sort());
  t.true(closes.every((l) => l.endsWith('bytes_sent=9 bytes_recv=9 pkts_sent=2 pkts_recv=2')), closes.join('\n'));
  t.regex(daemon.lines[daemon.lines.length - 1]!, /packetpony stopped/);
});
