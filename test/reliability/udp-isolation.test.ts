/**
 * Reliability case 8 — UDP isolation. SESSIONS clients, each its own session, each sending
 * DATAGRAMS datagrams with payloads no other client sends, through a UDP listener to an echo
 * backend.
 *
 * Pass criteria:
 * - every reply reaches only its own client: no client ever receives a payload it did not send,
 *   and every client gets every one of its payloads back (resent after 300 ms if loopback lost it);
 * - sessions expire on time: each session's close event comes no earlier than session_timeout after
 *   its client sent the datagram of its last reply (the proxy's last activity came after that send;
 *   the reply's arrival can come after it by the client's own event-loop delay, so it cannot bound
 *   from below), and no later than session_timeout plus one sweep period (timeout/8) plus 20 % after
 *   the client's last reply;
 * - the child's upstream sockets return to their baseline once the sessions have expired.
 */
import test from 'ava';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/wait-for.js';
import { summary } from '../helpers/reliability/clients.js';
import { mainFile, udpListener } from '../helpers/reliability/config.js';
import { socketCount } from '../helpers/reliability/proc.js';
import { lateBound, size } from '../helpers/reliability/scale.js';
import { udpLoad } from '../helpers/reliability/udp-load.js';
import { tempDir } from '../helpers/reliability/temp.js';

const SESSIONS = size(2000, 10_000);
const DATAGRAMS = size(20, 100);
const TIMEOUT_MS = size(2000, 5000);
const SWEEP_MS = Math.min(1000, TIMEOUT_MS / 8);

async function echoBackend(t: Parameters<typeof udpLoad>[0]): Promise<number> {
  const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
  socket.on('message', (msg, from) => socket.send(msg, from.port, from.address));
  socket.on('error', () => {});
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => socket.close(() => resolve())));
  return socket.address().port;
}

test.serial(`UDP isolation: ${SESSIONS} sessions × ${DATAGRAMS} unique datagrams — every reply only to its own client, sessions expire on time, upstream sockets back to baseline`, async (t) => {
  t.timeout(size(180_000, 900_000));
  const backend = await echoBackend(t);
  const logDir = tempDir(t);
  const jsonlog = join(logDir, 'events.json');
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile({ jsonlog }),
    'conf.d/iso.yaml': udpListener(`127.0.0.1:${backend}`, `rate_limits:\n  max_total_connections: ${SESSIONS + 1000}\nudp:\n  session_timeout: "${TIMEOUT_MS}ms"\n`),
  });
  const port = await daemon.port('iso');
  const pid = await daemon.childPid('iso');
  const baseline = socketCount(pid);

  const result = await udpLoad(t, { port, clients: SESSIONS, datagrams: DATAGRAMS, deadlineMs: size(150_000, 800_000) });
  const peakSockets = socketCount(pid);
  t.log(`${SESSIONS * DATAGRAMS} datagrams in ${(result.elapsedMs / 1000).toFixed(1)} s (${((SESSIONS * DATAGRAMS) / (result.elapsedMs / 1000)).toFixed(0)}/s round trips); resent ${result.resent}, duplicate replies ${result.duplicates}, foreign replies ${result.foreign}`);
  t.log(`child sockets: ${baseline} before, ${peakSockets} with ${SESSIONS} sessions`);
  t.is(result.foreign, 0);
  t.is(result.complete, SESSIONS);
  t.is(result.matched, SESSIONS * DATAGRAMS);

  await waitFor(() => socketCount(pid) <= baseline || undefined, `child sockets back to ${baseline} (now ${socketCount(pid)})`, TIMEOUT_MS + 30_000);
  // Close events, matched to clients by source port.
  const closes = await waitFor(() => {
    const events = readFileSync(jsonlog, 'utf8').split('\n').filter((l) => l.includes('"event_type":"close"')).map((l) => JSON.parse(l) as { source_port: number; timestamp: string; packets_sent: number });
    return events.length >= SESSIONS ? events : undefined;
  }, `${SESSIONS} close events in the JSON log`, 30_000);
  const closedAt = new Map(closes.map((e) => [e.source_port, Date.parse(e.timestamp)]));
  const afterRequest = result.ports.map((p, i) => (closedAt.get(p) ?? NaN) - result.lastRequestAt[i]!);
  const afterReply = result.ports.map((p, i) => (closedAt.get(p) ?? NaN) - result.lastReplyAt[i]!);
  t.log(`session_timeout ${TIMEOUT_MS} ms, sweep ${SWEEP_MS} ms: close event after the client's last request (ms) ${summary(afterRequest)}, after its last reply ${summary(afterReply)}`);
  t.is(closes.length, SESSIONS);
  t.true(afterRequest.every((ms) => ms >= TIMEOUT_MS), `a session ended early: ${summary(afterRequest)}`);
  t.true(afterReply.every((ms) => ms <= lateBound((TIMEOUT_MS + SWEEP_MS) * 1.2)), `a session ended late: ${summary(afterReply)}`);
  t.true(closes.every((e) => e.packets_sent === DATAGRAMS || e.packets_sent > DATAGRAMS), 'a close event counts fewer datagrams than were sent');
  await result.close();
});
