/**
 * The UDP relay's per-session plans on real loopback sockets: a PROXY protocol v2 header before
 * every datagram a session sends (and none on the replies), sessions routed to the target a plan
 * names, a refused plan, planEnded, and endSessions() for a target that went down. On the batched
 * path; udp-relay-node-path.test.ts runs them on Node's.
 */
import test, { type ExecutionContext } from 'ava';
import dgram from 'node:dgram';
import type { UdpSettings } from '../../../src/config/types.js';
import { encodeV2, parseProxyHeader } from '../../../src/proxy/proxy-protocol.js';
import { UdpRelay, type UdpDropReason, type UdpSessionPlan } from '../../../src/proxy/udp-relay.js';
import type { ConnectionEvent } from '../../../src/telemetry/events.js';
import { ListenerStats } from '../../../src/telemetry/stats.js';
import { startUdpBackend, udpClient } from '../../helpers/udp.js';
import { waitFor } from '../../helpers/wait-for.js';
import { publicPathForced } from '../../../src/platform/index.js';

const UDP: UdpSettings = {
  session_timeout: 60_000,
  buffer_size: 4096,
  logging: { log_session_start: true, log_session_close: true, periodic_log_interval: 0, periodic_log_bytes: 0, min_log_duration: 0, min_log_bytes: 0 },
};

interface Plan extends UdpSessionPlan {
  readonly name: string;
}

async function relayWith(
  t: ExecutionContext,
  target: { host: string; port: number } | null,
  plan: (ip: string, port: number) => Plan | undefined,
): Promise<{ relay: UdpRelay; port: number; ended: Plan[]; drops: UdpDropReason[]; events: ConnectionEvent[]; released: number[] }> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const ended: Plan[] = [];
  const drops: UdpDropReason[] = [];
  const events: ConnectionEvent[] = [];
  const released: number[] = [];
  const relay = new UdpRelay({
    listenerName: 'plans',
    socket,
    target,
    udp: UDP,
    stats: new ListenerStats(),
    batched: process.env['PP_TEST_UDP_BATCHED'] !== '0' && !publicPathForced(),
    hooks: {
      plan,
      planEnded: (p) => ended.push(p as Plan),
      release: () => released.push(1),
      onDrop: (reason) => drops.push(reason),
      onEvent: (event) => events.push(event),
    },
  });
  t.teardown(() => relay.close({ closeSocket: true }));
  await relay.start();
  return { relay, port: socket.address().port, ended, drops, events, released };
}

test('a v2 header goes before every datagram of the session; replies come back without it', async (t) => {
  const backend = await startUdpBackend(t, { respond: (data) => Buffer.from(`re:${data.length}`) });
  let local = 0;
  const h = await relayWith(t, { host: '127.0.0.1', port: backend.port }, (ip, port) => ({
    name: 'h',
    target: null,
    header: encodeV2('udp', { ip, port }, { ip: '127.0.0.1', port: local }),
  }));
  local = h.port;
  const client = await udpClient(t, h.port);
  const header = encodeV2('udp', { ip: '127.0.0.1', port: client.localPort }, { ip: '127.0.0.1', port: h.port });
  t.is((await client.request('one')).toString(), `re:${header.length + 3}`);
  t.is((await client.request('second')).toString(), `re:${header.length + 6}`);
  t.is(backend.received.length, 2);
  for (const [i, payload] of ['one', 'second'].entries()) {
    const data = backend.received[i]!.data;
    const parsed = parseProxyHeader(data);
    if (parsed.kind !== 'header') return t.fail();
    t.deepEqual(parsed.header.source, { ip: '127.0.0.1', port: client.localPort });
    t.deepEqual(parsed.header.destination, { ip: '127.0.0.1', port: h.port });
    t.is(data.subarray(parsed.length).toString(), payload);
  }
  t.is(h.events[0]!.bytes_sent, 0, 'open event');
});

test('plans route sessions to their targets; a refused plan drops the datagram and releases the admission', async (t) => {
  const a = await startUdpBackend(t, { respond: () => Buffer.from('A') });
  const b = await startUdpBackend(t, { respond: () => Buffer.from('B') });
  let turn = 0;
  let refuse = false;
  const h = await relayWith(t, null, () => {
    if (refuse) return undefined;
    const port = turn++ % 2 === 0 ? a.port : b.port;
    return { name: String(port), target: { ip: '127.0.0.1', port, family: 4 }, header: null };
  });
  const c1 = await udpClient(t, h.port);
  const c2 = await udpClient(t, h.port);
  t.is((await c1.request('x')).toString(), 'A');
  t.is((await c2.request('x')).toString(), 'B');
  t.is((await c1.request('y')).toString(), 'A', 'the session keeps its target');
  t.is(h.events.filter((e) => e.event_type === 'open').map((e) => e.target_port).join(), `${a.port},${b.port}`);

  refuse = true;
  const c3 = await udpClient(t, h.port);
  c3.send('nobody');
  await waitFor(() => h.drops.includes('no_target'), 'the refused plan');
  t.is(h.relay.sessionCount, 2);
  t.is(h.released.length, 1, 'the admission of the refused datagram was released');
});

test('endSessions() ends the chosen sessions with their close events; planEnded for each; new datagrams plan again', async (t) => {
  const a = await startUdpBackend(t, { respond: () => Buffer.from('A') });
  const b = await startUdpBackend(t, { respond: () => Buffer.from('B') });
  let next = a.port;
  const h = await relayWith(t, null, () => ({ name: String(next), target: { ip: '127.0.0.1', port: next, family: 4 }, header: null }));
  const c1 = await udpClient(t, h.port);
  t.is((await c1.request('x')).toString(), 'A');
  next = b.port;
  const c2 = await udpClient(t, h.port);
  t.is((await c2.request('x')).toString(), 'B');

  h.relay.endSessions((plan) => (plan as Plan).name === String(a.port));
  t.is(h.relay.sessionCount, 1);
  t.deepEqual(h.ended.map((p) => p.name), [String(a.port)]);
  const closes = h.events.filter((e) => e.event_type === 'close');
  t.is(closes.length, 1);
  t.is(closes[0]!.source_port, c1.localPort);
  // c1 comes back: a new session, on the target the plan now names.
  t.is((await c1.request('again')).toString(), 'B');
  await h.relay.close({ closeSocket: true });
  t.is(h.ended.length, 3, 'every planned session ended once');
});
