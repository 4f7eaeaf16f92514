/**
 * Reliability case 9 — UDP abuse and edges: the session cap, 0-byte and 65,507-byte datagrams,
 * ICMP port unreachable from the target.
 *
 * Pass criteria:
 * - at the session cap, new clients' datagrams are dropped (no reply, no upstream socket) and
 *   counted in packetpony_rate_limit_drops_total, while every existing session keeps being served;
 *   with max_total_connections (CI) the cap is the policy's (reason total_limit), without it (full
 *   run) the relay's 10,000 (reason session_limit);
 * - a 0-byte datagram is forwarded and its 0-byte answer returned; a 65,507-byte datagram (the
 *   IPv4 maximum) is forwarded intact with udp.buffer_size 65535, and with the default 4096 dropped
 *   whole and counted as oversize_datagram — never truncated;
 * - ICMP port unreachable: the session is kept, the error counted and logged, and the same session
 *   is answered once the target is back;
 * - no crash: the child's PID is the same at the end of each case.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { startDaemon } from '../helpers/daemon.js';
import { waitForSample } from '../helpers/metrics.js';
import { startUdpBackend, udpClient, unreachableUdpPort, type UdpClient } from '../helpers/udp.js';
import { waitFor } from '../helpers/wait-for.js';
import { mainFile, udpListener } from '../helpers/reliability/config.js';
import { socketCount } from '../helpers/reliability/proc.js';
import { FULL, size } from '../helpers/reliability/scale.js';
import { udpLoad } from '../helpers/reliability/udp-load.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test.serial(`UDP session cap (${FULL ? 'relay default 10,000: session_limit' : 'max_total_connections 50: total_limit'}): new clients dropped and counted, existing sessions served`, async (t) => {
  t.timeout(size(60_000, 300_000));
  const cap = size(50, 10_000);
  const extra = size(200, 500);
  const reason = FULL ? 'session_limit' : 'total_limit';
  const backend = await startUdpBackend(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile({ metrics: true }),
    'conf.d/cap.yaml': udpListener(`127.0.0.1:${backend.port}`, `${FULL ? '' : `rate_limits:\n  max_total_connections: ${cap}\n`}udp:\n  session_timeout: "5m"\n`),
  });
  const port = await daemon.port('cap');
  const pid = await daemon.childPid('cap');
  const baseSockets = socketCount(pid);
  // Fill the table: `cap` clients, one round trip each; they stay open.
  const existing = await udpLoad(t, { port, clients: cap, datagrams: 1, deadlineMs: 120_000 });
  t.is(existing.complete, cap);
  t.is(socketCount(pid), baseSockets + cap);
  // The newcomers: each sends 3 datagrams, none may be answered.
  const newcomers: UdpClient[] = [];
  for (let i = 0; i < extra; i++) newcomers.push(await udpClient(t, port));
  // In batches of 50 datagrams, each counted before the next: a burst of hundreds would overflow
  // the listening socket's receive buffer, and the kernel's drops are no count of ours.
  let sent = 0;
  let dropped = 0;
  for (let k = 0; k < 3; k++) {
    for (let i = 0; i < extra; i += 25) {
      for (const client of newcomers.slice(i, i + 25)) {
        client.send(`new-${k}`);
        sent++;
      }
      dropped = await waitForSample(daemon, 'packetpony_rate_limit_drops_total', { listener: 'cap', reason }, sent, 30_000);
    }
  }
  // Meanwhile the existing sessions are served: 5 more round trips each, on the same sockets.
  const again = await existing.again(5, 60_000);
  t.log(`cap ${cap}: ${extra} newcomers × 3 datagrams → ${dropped} counted as ${reason}; newcomers answered: ${newcomers.reduce((n, c) => n + c.replies.length, 0)}; existing sessions: ${again.complete}/${cap} answered 5 more times; child sockets ${baseSockets} → ${socketCount(pid)}`);
  t.is(again.complete, cap);
  t.is(again.foreign, 0);
  t.is(newcomers.reduce((n, c) => n + c.replies.length, 0), 0);
  t.is(socketCount(pid), baseSockets + cap, 'an upstream socket was opened for a refused client');
  t.is(daemon.lines.filter((l) => l.includes('Connection opened: listener=cap')).length, cap);
  t.is(await daemon.childPid('cap'), pid);
  await existing.close();
});

test.serial('UDP edges: 0-byte and 65,507-byte datagrams forwarded intact with buffer_size 65535; 65,507 bytes dropped whole and counted with the default 4096', async (t) => {
  const backend = await startUdpBackend(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile({ metrics: true }),
    'conf.d/big.yaml': udpListener(`127.0.0.1:${backend.port}`, 'udp:\n  buffer_size: "65535B"\n'),
    'conf.d/small.yaml': udpListener(`127.0.0.1:${backend.port}`),
  });
  const big = await udpClient(t, await daemon.port('big'));
  const empty = await big.request(Buffer.alloc(0));
  t.is(empty.length, 0);
  const max = randomBytes(65_507);
  const back = await big.request(max);
  t.is(back.length, 65_507);
  t.is(sha(back), sha(max));
  const small = await udpClient(t, await daemon.port('small'));
  small.send(max);
  t.is(await waitForSample(daemon, 'packetpony_errors_total', { listener: 'small', type: 'oversize_datagram' }, 1), 1);
  t.regex(await daemon.waitForLine(/listener small: dropped a datagram from client 127\.0\.0\.1:\d+ larger than udp\.buffer_size \(4096 bytes\)/), /dropped/);
  t.deepEqual((await small.request('after')).toString(), 'after');
  t.false(backend.received.some((d) => d.data.length > 4096 && d.data.length !== 65_507), 'a truncated datagram reached the backend');
  t.is(backend.received.filter((d) => d.data.length === 65_507).length, 1, 'the 65,507-byte datagram reached the backend once, through the big listener only');
  t.log(`0-byte: answered with 0 bytes; 65,507 bytes: echoed intact (sha256 equal) with buffer_size 65535, dropped and counted with 4096`);
});

test.serial('UDP target unreachable (ICMP port unreachable): the session is kept, the error counted and logged, the same session answered once the target is back', async (t) => {
  const target = await unreachableUdpPort(t);
  const daemon = await startDaemon(t, { 'packetpony.yaml': mainFile({ metrics: true }), 'conf.d/icmp.yaml': udpListener(`127.0.0.1:${target.port}`) });
  const port = await daemon.port('icmp');
  const pid = await daemon.childPid('icmp');
  const client = await udpClient(t, port);
  for (let i = 0; i < 5; i++) client.send(`lost-${i}`);
  const errors = await waitForSample(daemon, 'packetpony_errors_total', { listener: 'icmp', type: 'target_read' }, 1);
  const warning = await daemon.waitForLine(/listener icmp: target read error: .*ECONNREFUSED/);
  t.is(client.replies.length, 0);
  await target.serve();
  const reply = await waitFor(async () => {
    client.send('back');
    return client.replies.length > 0 ? client.replies[0] : undefined;
  }, 'an answer once the target is back');
  t.is(reply!.toString(), 'back');
  t.is(daemon.lines.filter((l) => l.includes('Connection opened: listener=icmp')).length, 1, 'a second session was opened');
  t.is(await daemon.childPid('icmp'), pid);
  t.log(`${errors} target_read error(s) counted; logged: ${warning.replace(/^\[[^\]]+\] /, '')}`);
});
