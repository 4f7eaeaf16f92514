/**
 * The UDP relay on real loopback sockets, in process. Each test owns its sockets and closes them in
 * t.teardown; conditions are awaited with a deadline, never by sleeping; no test passes or fails on
 * speed. Where time matters for logging thresholds the clock is injected; idle timeouts use short
 * real intervals and only assert what happened, not when.
 *
 * The relay runs on its batched path (udp-batch.ts) here; udp-relay-node-path.test.ts runs these
 * same tests on Node's path, by setting PP_TEST_UDP_BATCHED=0 before importing this file.
 */
import test, { type ExecutionContext } from 'ava';
import dgram from 'node:dgram';
import type { UdpLoggingSettings, UdpSettings } from '../../../src/config/types.js';
import { TargetResolver, type LookupAll, type ResolvedAddress } from '../../../src/proxy/target-resolver.js';
import {
  UdpRelay,
  type UdpAdmission,
  type UdpDirection,
  type UdpDropReason,
  type UdpRelayHooks,
} from '../../../src/proxy/udp-relay.js';
import { SessionTable, UdpSession } from '../../../src/proxy/udp-sessions.js';
import type { ConnectionEvent } from '../../../src/telemetry/events.js';
import { ListenerStats, type ErrorType } from '../../../src/telemetry/stats.js';
import { publicPathForced } from '../../../src/platform/index.js';

// ---- helpers ---------------------------------------------------------------------------------

// The batched path takes sockets from their native handles: not with PACKETPONY_PUBLIC_PATH=1.
const BATCHED = process.env['PP_TEST_UDP_BATCHED'] !== '0' && !publicPathForced();

async function waitFor(what: string, condition: () => boolean, deadlineMs = 10_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

function udpSettings(
  overrides: Partial<Omit<UdpSettings, 'logging'>> & { logging?: Partial<UdpLoggingSettings> } = {},
): UdpSettings {
  return {
    session_timeout: overrides.session_timeout ?? 10_000,
    buffer_size: overrides.buffer_size ?? 4096,
    logging: {
      log_session_start: true,
      log_session_close: true,
      periodic_log_interval: 300_000,
      periodic_log_bytes: 100 * 1024 * 1024,
      min_log_duration: 0,
      min_log_bytes: 0,
      ...overrides.logging,
    },
  };
}

function closeQuietly(socket: dgram.Socket): Promise<void> {
  return new Promise((resolve) => {
    try {
      socket.close(() => resolve());
    } catch {
      resolve();
    }
  });
}

async function bindUdp(
  t: ExecutionContext,
  type: dgram.SocketType = 'udp4',
  host = type === 'udp6' ? '::1' : '127.0.0.1',
  port = 0,
  reuseAddr = false,
): Promise<dgram.Socket> {
  const socket = dgram.createSocket({ type, reuseAddr });
  t.teardown(() => closeQuietly(socket));
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(port, host, () => {
      socket.off('error', reject);
      resolve();
    });
  });
  return socket;
}

interface Received {
  readonly data: Buffer;
  readonly address: string;
  readonly port: number;
}

interface Peer {
  readonly socket: dgram.Socket;
  readonly port: number;
  readonly received: Received[];
}

/** A target that records what it gets and, unless told otherwise, echoes it back. */
async function udpTarget(
  t: ExecutionContext,
  options: { type?: dgram.SocketType; host?: string; echo?: boolean; reply?: (data: Buffer) => Buffer } = {},
): Promise<Peer> {
  const socket = await bindUdp(t, options.type ?? 'udp4', options.host);
  const received: Received[] = [];
  socket.on('message', (data, rinfo) => {
    received.push({ data, address: rinfo.address, port: rinfo.port });
    if (options.echo === false) return;
    socket.send(options.reply !== undefined ? options.reply(data) : data, rinfo.port, rinfo.address);
  });
  return { socket, port: socket.address().port, received };
}

async function udpClient(t: ExecutionContext, type: dgram.SocketType = 'udp4', host?: string): Promise<Peer> {
  const socket = await bindUdp(t, type, host);
  const received: Received[] = [];
  socket.on('message', (data, rinfo) => received.push({ data, address: rinfo.address, port: rinfo.port }));
  return { socket, port: socket.address().port, received };
}

interface Harness<A extends UdpAdmission> {
  readonly relay: UdpRelay<A>;
  readonly socket: dgram.Socket;
  readonly port: number;
  readonly host: string;
  readonly stats: ListenerStats;
  readonly events: ConnectionEvent[];
  readonly drops: Array<{ reason: UdpDropReason; ip: string; port: number; direction: UdpDirection }>;
  readonly errors: Array<{ type: ErrorType; code: string | undefined; ip: string | undefined }>;
}

interface RelayOptions<A extends UdpAdmission> {
  readonly udp?: UdpSettings;
  readonly maxSessions?: number;
  readonly hooks?: Omit<UdpRelayHooks<A>, 'onEvent' | 'onDrop' | 'onError'>;
  readonly type?: dgram.SocketType;
  readonly host?: string;
  readonly targetHost?: string;
  readonly clock?: () => number;
  readonly resolver?: TargetResolver;
  readonly resolveIntervalMs?: number;
  readonly sweepIntervalMs?: number;
}

async function startRelay<A extends UdpAdmission = UdpAdmission>(
  t: ExecutionContext,
  targetPort: number,
  options: RelayOptions<A> = {},
): Promise<Harness<A>> {
  const type = options.type ?? 'udp4';
  const host = options.host ?? (type === 'udp6' ? '::1' : '127.0.0.1');
  const socket = await bindUdp(t, type, host);
  const stats = new ListenerStats();
  const events: ConnectionEvent[] = [];
  const drops: Harness<A>['drops'] = [];
  const errors: Harness<A>['errors'] = [];
  const relay = new UdpRelay<A>({
    listenerName: 'test',
    socket,
    target: { host: options.targetHost ?? (type === 'udp6' ? '::1' : '127.0.0.1'), port: targetPort },
    udp: options.udp ?? udpSettings(),
    stats,
    batched: BATCHED,
    ...(options.maxSessions !== undefined ? { maxSessions: options.maxSessions } : {}),
    ...(options.clock !== undefined ? { clock: options.clock } : {}),
    ...(options.resolver !== undefined ? { resolver: options.resolver } : {}),
    ...(options.resolveIntervalMs !== undefined ? { resolveIntervalMs: options.resolveIntervalMs } : {}),
    ...(options.sweepIntervalMs !== undefined ? { sweepIntervalMs: options.sweepIntervalMs } : {}),
    hooks: {
      ...options.hooks,
      onEvent: (event) => events.push(event),
      onDrop: (reason, ip, port, direction) => drops.push({ reason, ip, port, direction }),
      onError: (type, error, ip) => errors.push({ type, code: (error as NodeJS.ErrnoException).code, ip }),
    },
  });
  t.teardown(() => relay.close({ closeSocket: true }));
  await relay.start();
  t.is(relay.batched, BATCHED);
  return { relay, socket, port: socket.address().port, host, stats, events, drops, errors };
}

function send(peer: Peer, data: Buffer | string, port: number, host = '127.0.0.1'): void {
  peer.socket.send(typeof data === 'string' ? Buffer.from(data) : data, port, host);
}

const ofType = (events: readonly ConnectionEvent[], type: ConnectionEvent['event_type']) =>
  events.filter((e) => e.event_type === type);

function ipv6Available(): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = dgram.createSocket('udp6');
    probe.once('error', () => {
      probe.close();
      resolve(false);
    });
    probe.bind(0, '::1', () => {
      probe.close();
      resolve(true);
    });
  });
}

// ---- sessions and return traffic -------------------------------------------------------------

test('20 concurrent sessions from distinct source ports each get only their own replies', async (t) => {
  const target = await udpTarget(t, { reply: (data) => Buffer.concat([Buffer.from('echo:'), data]) });
  const h = await startRelay(t, target.port);
  const clients = await Promise.all(Array.from({ length: 20 }, () => udpClient(t)));
  clients.forEach((client, i) => {
    for (let k = 0; k < 3; k++) send(client, `client-${i}-datagram-${k}`, h.port);
  });
  await waitFor('every reply', () => clients.every((c) => c.received.length === 3));

  clients.forEach((client, i) => {
    const got = client.received.map((r) => r.data.toString()).sort();
    t.deepEqual(got, [0, 1, 2].map((k) => `echo:client-${i}-datagram-${k}`));
    // Replies come from the listening socket's address.
    t.true(client.received.every((r) => r.port === h.port && r.address === '127.0.0.1'));
  });
  t.is(h.relay.sessionCount, 20);
  // One upstream socket per session: the target saw 20 distinct source ports, 3 datagrams each.
  const upstreamPorts = new Map<number, number>();
  for (const r of target.received) upstreamPorts.set(r.port, (upstreamPorts.get(r.port) ?? 0) + 1);
  t.is(upstreamPorts.size, 20);
  t.true([...upstreamPorts.values()].every((n) => n === 3));
  t.is(h.stats.accepted, 20);
  t.is(h.stats.active, 20);
  t.is(h.stats.packetsSent, 60);
  t.is(h.stats.packetsReceived, 60);
  t.is(ofType(h.events, 'open').length, 20);
  const open = ofType(h.events, 'open')[0]!;
  t.like(open, { kind: 'connection', protocol: 'udp', listener_name: 'test', source_ip: '127.0.0.1',
    target_ip: '127.0.0.1', target_port: target.port, bytes_sent: 0, packets_sent: 0 });
});

test('IPv6: sessions over ::1 relay both ways and log IPv6 addresses', async (t) => {
  if (!(await ipv6Available())) {
    t.log('no IPv6 loopback here');
    t.pass();
    return;
  }
  const target = await udpTarget(t, { type: 'udp6' });
  const h = await startRelay(t, target.port, { type: 'udp6' });
  const a = await udpClient(t, 'udp6');
  const b = await udpClient(t, 'udp6');
  send(a, 'from-a', h.port, '::1');
  send(b, 'from-b', h.port, '::1');
  await waitFor('replies', () => a.received.length === 1 && b.received.length === 1);
  t.is(a.received[0]!.data.toString(), 'from-a');
  t.is(b.received[0]!.data.toString(), 'from-b');
  t.is(a.received[0]!.address, '::1');
  t.is(target.received[0]!.address, '::1');
  await h.relay.close();
  const closes = ofType(h.events, 'close');
  t.is(closes.length, 2);
  t.deepEqual(new Set(closes.map((e) => e.source_port)), new Set([a.port, b.port]));
  t.true(closes.every((e) => e.source_ip === '::1' && e.target_ip === '::1' && e.packets_received === 1));
});

test('dual-stack listener: an IPv4 client is logged as IPv4 and gets its replies', async (t) => {
  if (!(await ipv6Available())) {
    t.log('no IPv6 here');
    t.pass();
    return;
  }
  const target = await udpTarget(t);
  const admitted: string[] = [];
  const h = await startRelay(t, target.port, {
    type: 'udp6',
    host: '::',
    targetHost: '127.0.0.1',
    hooks: { admit: (ip) => (admitted.push(ip), { allow: true }) },
  });
  const client = await udpClient(t);
  send(client, 'mapped', h.port, '127.0.0.1');
  await waitFor('reply', () => client.received.length === 1);
  t.is(client.received[0]!.data.toString(), 'mapped');
  t.deepEqual(admitted, ['127.0.0.1']);
  t.is(ofType(h.events, 'open')[0]!.source_ip, '127.0.0.1');
});

test('an empty datagram is forwarded both ways and counted as a packet', async (t) => {
  const target = await udpTarget(t);
  const h = await startRelay(t, target.port);
  const client = await udpClient(t);
  send(client, Buffer.alloc(0), h.port);
  await waitFor('empty reply', () => client.received.length === 1);
  t.is(target.received[0]!.data.length, 0);
  t.is(client.received[0]!.data.length, 0);
  await h.relay.close();
  t.like(ofType(h.events, 'close')[0], { packets_sent: 1, packets_received: 1, bytes_sent: 0, bytes_received: 0 });
});

// ---- idle timeout ----------------------------------------------------------------------------

test('an idle session times out with a close event carrying its counts; the next datagram opens a new one', async (t) => {
  const target = await udpTarget(t);
  const h = await startRelay(t, target.port, { udp: udpSettings({ session_timeout: 150 }) });
  const client = await udpClient(t);
  for (let k = 0; k < 3; k++) send(client, `ping-${k}`, h.port);
  await waitFor('three replies', () => client.received.length === 3);
  await waitFor('the close event', () => ofType(h.events, 'close').length === 1);

  const close = ofType(h.events, 'close')[0]!;
  t.like(close, {
    source_port: client.port,
    packets_sent: 3,
    packets_received: 3,
    bytes_sent: 18,
    bytes_received: 18,
  });
  t.true(close.duration_ms >= 150);
  t.is(h.relay.sessionCount, 0);
  t.is(h.stats.active, 0);
  t.is(h.stats.takeDelta().duration_count, 1);

  send(client, 'again', h.port);
  await waitFor('reply in the new session', () => client.received.length === 4);
  t.is(ofType(h.events, 'open').length, 2);
  // A new upstream socket: the target sees a different source port.
  t.not(target.received[3]!.port, target.received[0]!.port);
});

test('traffic in either direction keeps a session alive', async (t) => {
  // A fake clock that only moves when told, and a way to know that a sweep has looked since.
  let now = 0;
  let reads = 0;
  const clock = () => (reads++, now);
  const sweepSince = async (before: number) => waitFor('a sweep', () => reads > before);
  const target = await udpTarget(t, { echo: false });
  const h = await startRelay(t, target.port, { clock, sweepIntervalMs: 5, udp: udpSettings({ session_timeout: 200 }) });
  const client = await udpClient(t);
  send(client, 'start', h.port);
  await waitFor('the first datagram', () => target.received.length === 1);
  const upstream = target.received[0]!;

  // Only the target talks from now on, every 150 ms of clock time: 750 ms of client silence.
  for (let k = 0; k < 5; k++) {
    target.socket.send(`push-${k}`, upstream.port, upstream.address);
    await waitFor(`push ${k}`, () => client.received.length === k + 1);
    now += 150;
    await sweepSince(reads);
  }
  t.is(ofType(h.events, 'close').length, 0);
  t.is(h.relay.sessionCount, 1);

  // Silence both ways: the session ends.
  now += 250;
  await waitFor('idle close', () => ofType(h.events, 'close').length === 1);
  t.like(ofType(h.events, 'close')[0], { packets_sent: 1, packets_received: 5, duration_ms: 1000 });
});

// ---- session logging -------------------------------------------------------------------------

test('periodic update by interval', async (t) => {
  const target = await udpTarget(t);
  const h = await startRelay(t, target.port, {
    udp: udpSettings({ logging: { periodic_log_interval: 50, periodic_log_bytes: 0 } }),
  });
  const client = await udpClient(t);
  send(client, 'hello', h.port);
  await waitFor('reply', () => client.received.length === 1);
  // Counted from the reply on: under load the first tick can come before the reply is relayed.
  const before = ofType(h.events, 'update').length;
  await waitFor('two updates after the reply', () => ofType(h.events, 'update').length >= before + 2);
  const update = ofType(h.events, 'update')[before]!;
  t.like(update, { source_port: client.port, packets_sent: 1, packets_received: 1, bytes_sent: 5, bytes_received: 5 });
  t.true(update.duration_ms >= 50);
  t.is(ofType(h.events, 'close').length, 0);
});

test('periodic update by bytes, counting both directions', async (t) => {
  const target = await udpTarget(t);
  const h = await startRelay(t, target.port, {
    udp: udpSettings({ logging: { periodic_log_interval: 0, periodic_log_bytes: 1000 } }),
  });
  const client = await udpClient(t);
  const payload = Buffer.alloc(300, 7);
  for (let k = 0; k < 10; k++) {
    send(client, payload, h.port);
    await waitFor(`reply ${k}`, () => client.received.length === k + 1);
  }
  // 20 datagrams of 300 bytes: each update needs 4 of them (1,200 ≥ 1,000), then counts afresh.
  const updates = ofType(h.events, 'update');
  t.is(updates.length, 5);
  t.deepEqual(updates.map((e) => e.bytes_sent + e.bytes_received), [1200, 2400, 3600, 4800, 6000]);
});

test('log_session_start and log_session_close false: no open or close events', async (t) => {
  const target = await udpTarget(t);
  const h = await startRelay(t, target.port, {
    udp: udpSettings({ logging: { log_session_start: false, log_session_close: false } }),
  });
  const client = await udpClient(t);
  send(client, 'quiet', h.port);
  await waitFor('reply', () => client.received.length === 1);
  await h.relay.close();
  t.deepEqual(h.events, []);
  // Still counted.
  t.is(h.stats.accepted, 1);
  t.is(h.stats.takeDelta().duration_count, 1);
});

test('min_log_duration skips the close and update events of short sessions, not their open event', async (t) => {
  let now = 1_000;
  const target = await udpTarget(t);
  const h = await startRelay(t, target.port, {
    clock: () => now,
    udp: udpSettings({ logging: { min_log_duration: 5_000, periodic_log_bytes: 10 } }),
  });
  const short = await udpClient(t);
  const long = await udpClient(t);
  send(short, 'short-session', h.port);
  send(long, 'long-session', h.port);
  await waitFor('replies', () => short.received.length === 1 && long.received.length === 1);
  // Both moved more than periodic_log_bytes, but are younger than min_log_duration.
  t.is(ofType(h.events, 'update').length, 0);
  t.is(ofType(h.events, 'open').length, 2);

  now += 6_000;
  send(long, 'later', h.port);
  await waitFor('reply', () => long.received.length === 2);
  t.is(ofType(h.events, 'update').length, 1);
  t.is(ofType(h.events, 'update')[0]!.source_port, long.port);
  t.is(ofType(h.events, 'update')[0]!.duration_ms, 6_000);
  await h.relay.close();
  // By now both sessions are 6 s old, so both close events pass; the next test covers a close
  // before min_log_duration.
  t.is(ofType(h.events, 'close').length, 2);
});

test('min_log_duration: a session closed before it is reached leaves no close event', async (t) => {
  let now = 0;
  const target = await udpTarget(t);
  const h = await startRelay(t, target.port, { clock: () => now, udp: udpSettings({ logging: { min_log_duration: 5_000 } }) });
  const client = await udpClient(t);
  send(client, 'brief', h.port);
  await waitFor('reply', () => client.received.length === 1);
  now = 4_999;
  await h.relay.close();
  t.is(ofType(h.events, 'open').length, 1);
  t.is(ofType(h.events, 'close').length, 0);
});

test('min_log_bytes skips the close event of small sessions and keeps that of big ones', async (t) => {
  const target = await udpTarget(t);
  const h = await startRelay(t, target.port, { udp: udpSettings({ logging: { min_log_bytes: 1024 } }) });
  const small = await udpClient(t);
  const big = await udpClient(t);
  send(small, 'tiny', h.port);
  send(big, Buffer.alloc(600), h.port);
  await waitFor('replies', () => small.received.length === 1 && big.received.length === 1);
  await h.relay.close();
  const closes = ofType(h.events, 'close');
  t.is(closes.length, 1);
  t.like(closes[0], { source_port: big.port, bytes_sent: 600, bytes_received: 600 });
});

// ---- sizes -----------------------------------------------------------------------------------

test('a datagram larger than buffer_size is dropped whole and counted, both ways', async (t) => {
  const target = await udpTarget(t, { reply: (data) => (data.toString() === 'big-reply-please' ? Buffer.alloc(65) : data) });
  const h = await startRelay(t, target.port, { udp: udpSettings({ buffer_size: 64 }) });
  const client = await udpClient(t);

  send(client, Buffer.alloc(65, 1), h.port);
  await waitFor('the client-side drop', () => h.drops.length === 1);
  t.is(h.relay.sessionCount, 0, 'an oversize datagram opens no session');
  send(client, Buffer.alloc(64, 2), h.port);
  await waitFor('the 64-byte reply', () => client.received.length === 1);
  t.is(target.received.length, 1);
  t.is(target.received[0]!.data.length, 64);

  send(client, 'big-reply-please', h.port);
  await waitFor('the target-side drop', () => h.drops.length === 2);
  send(client, 'small', h.port);
  await waitFor('the small reply', () => client.received.length === 2);
  t.is(client.received[1]!.data.toString(), 'small');

  t.deepEqual(h.drops.map((d) => [d.reason, d.direction, d.ip, d.port]), [
    ['oversize_datagram', 'sent', '127.0.0.1', client.port],
    ['oversize_datagram', 'received', '127.0.0.1', client.port],
  ]);
  t.is(h.stats.takeDelta().errors.oversize_datagram, 2);
});

// ---- bounds and policy hooks -----------------------------------------------------------------

test('at the session cap new clients are dropped and counted; existing sessions are unaffected', async (t) => {
  const target = await udpTarget(t);
  const h = await startRelay(t, target.port, { maxSessions: 3 });
  const clients = await Promise.all(Array.from({ length: 5 }, () => udpClient(t)));
  for (const c of clients.slice(0, 3)) send(c, `in-${c.port}`, h.port);
  await waitFor('three sessions', () => clients.slice(0, 3).every((c) => c.received.length === 1));
  for (const c of clients.slice(3)) send(c, `out-${c.port}`, h.port);
  await waitFor('two drops', () => h.drops.length === 2);

  t.deepEqual(h.drops.map((d) => d.reason), ['session_limit', 'session_limit']);
  t.deepEqual(new Set(h.drops.map((d) => d.port)), new Set([clients[3]!.port, clients[4]!.port]));
  t.is(h.relay.sessionCount, 3);
  send(clients[0]!, 'still-here', h.port);
  await waitFor('reply on an existing session', () => clients[0]!.received.length === 2);
  t.is(target.received.length, 4);
  t.false(target.received.some((r) => r.data.toString().startsWith('out-')));
  t.is(clients[3]!.received.length, 0);
  const delta = h.stats.takeDelta();
  t.is(delta.rate_limit_drops.session_limit, 2);
  t.is(delta.rate_limited, 2);
  t.is(delta.accepted, 3);
});

test('admit refusal opens no upstream socket; release gets the admission back when the session ends', async (t) => {
  const target = await udpTarget(t);
  const admitted: string[] = [];
  const released: UdpAdmission[] = [];
  const allow = { allow: true, id: 'ticket' } as const;
  let refuse = true;
  const h = await startRelay(t, target.port, {
    udp: udpSettings({ session_timeout: 100 }),
    hooks: {
      admit: (ip) => {
        admitted.push(ip);
        return refuse ? { allow: false } : allow;
      },
      release: (admission) => released.push(admission),
    },
  });
  const client = await udpClient(t);
  send(client, 'one', h.port);
  send(client, 'two', h.port);
  await waitFor('two admit calls', () => admitted.length === 2);
  t.is(h.relay.sessionCount, 0);
  t.deepEqual(released, []);

  refuse = false;
  send(client, 'three', h.port);
  send(client, 'four', h.port);
  await waitFor('two replies', () => client.received.length === 2);
  t.is(admitted.length, 3, 'asked once per new session, not per datagram');
  t.deepEqual(target.received.map((r) => r.data.toString()), ['three', 'four']);
  await waitFor('idle end', () => released.length === 1);
  t.is(released[0], allow);
});

test('the meter sees every datagram both ways; -1 and throttle answers drop, others forward', async (t) => {
  const target = await udpTarget(t);
  const calls: Array<[number, UdpDirection]> = [];
  let answer = 0;
  const h = await startRelay(t, target.port, {
    hooks: {
      admit: () => ({ allow: true }),
      meter: (_admission, bytes, direction) => {
        calls.push([bytes, direction]);
        return answer;
      },
    },
  });
  const client = await udpClient(t);
  send(client, 'abc', h.port);
  await waitFor('reply', () => client.received.length === 1);
  t.deepEqual(calls, [[3, 'sent'], [3, 'received']]);

  answer = -1;
  send(client, 'dropped', h.port);
  answer = 250; // a throttle pause: UDP can only drop
  await waitFor('meter call', () => calls.length === 3);
  send(client, 'paced', h.port);
  await waitFor('meter call', () => calls.length === 4);
  answer = -2; // the policy's "violation, log it": forwarded
  send(client, 'logged', h.port);
  await waitFor('reply', () => client.received.length === 2);
  t.deepEqual(target.received.map((r) => r.data.toString()), ['abc', 'logged']);
  t.is(h.stats.packetsSent, 2);
});

// ---- errors ----------------------------------------------------------------------------------

/**
 * A target port where nothing receives from the relay: a socket bound with SO_REUSEADDR and
 * connected elsewhere. The kernel matches no socket for the relay's datagrams and answers with ICMP
 * port unreachable, yet the port stays ours, so that a second SO_REUSEADDR socket can bring the
 * target "back" on the same port without the reserve-then-close race.
 */
async function deadTarget(t: ExecutionContext): Promise<number> {
  const holder = await bindUdp(t, 'udp4', '127.0.0.1', 0, true);
  await new Promise<void>((resolve) => holder.connect(9, '127.0.0.1', () => resolve()));
  return holder.address().port;
}

test('ICMP port unreachable is counted, keeps the session and shows in its close event', async (t) => {
  const port = await deadTarget(t);
  const h = await startRelay(t, port);
  const client = await udpClient(t);
  send(client, 'anyone?', h.port);
  await waitFor('the ICMP error', () => h.errors.length >= 1);
  t.like(h.errors[0], { type: 'target_read', code: 'ECONNREFUSED', ip: '127.0.0.1' });
  t.is(h.relay.sessionCount, 1);
  send(client, 'still?', h.port);
  await waitFor('the second ICMP error', () => h.errors.length >= 2);
  t.is(ofType(h.events, 'open').length, 1, 'the same session');
  await h.relay.close();
  t.like(ofType(h.events, 'close')[0], { packets_sent: 2, packets_received: 0, error: 'ECONNREFUSED: target port unreachable' });
  t.true((h.stats.takeDelta().errors.target_read ?? 0) >= 2);
});

test('an unreachable target does not break the relay: once it listens, traffic flows', async (t) => {
  const port = await deadTarget(t);
  const h = await startRelay(t, port);
  const first = await udpClient(t);
  send(first, 'early', h.port);
  await waitFor('the ICMP error', () => h.errors.length >= 1);

  const revived = await bindUdp(t, 'udp4', '127.0.0.1', port, true);
  revived.on('message', (data, rinfo) => revived.send(Buffer.concat([Buffer.from('re:'), data]), rinfo.port, rinfo.address));
  const second = await udpClient(t);
  send(first, 'same-session', h.port);
  send(second, 'new-session', h.port);
  await waitFor('both replies', () => first.received.length === 1 && second.received.length === 1);
  t.is(first.received[0]!.data.toString(), 're:same-session');
  t.is(second.received[0]!.data.toString(), 're:new-session');
  await h.relay.close();
  const closes = ofType(h.events, 'close');
  t.is(closes.length, 2);
  t.true(closes.every((e) => e.error === undefined), 'a reply after the error clears it');
});

// ---- shutdown and hand-over ------------------------------------------------------------------

test('close() ends every session with a close event and leaves the listening socket open', async (t) => {
  const target = await udpTarget(t);
  const released: UdpAdmission[] = [];
  const h = await startRelay(t, target.port, {
    hooks: { admit: () => ({ allow: true }), release: (a) => released.push(a) },
  });
  const clients = await Promise.all(Array.from({ length: 5 }, () => udpClient(t)));
  for (const c of clients) send(c, `c-${c.port}`, h.port);
  await waitFor('replies', () => clients.every((c) => c.received.length === 1));
  await h.relay.close();
  const closes = ofType(h.events, 'close');
  t.deepEqual(new Set(closes.map((e) => e.source_port)), new Set(clients.map((c) => c.port)));
  t.true(closes.every((e) => e.packets_sent === 1 && e.packets_received === 1));
  t.is(released.length, 5);
  t.is(h.relay.sessionCount, 0);
  t.is(h.stats.active, 0);
  t.is(h.stats.takeDelta().duration_count, 5);
  // The caller's socket is still bound and usable; the relay no longer listens on it.
  t.is(h.socket.address().port, h.port);
  t.is(h.socket.listenerCount('message'), 0);
  t.is(await h.relay.close(), undefined, 'idempotent');
  t.is(ofType(h.events, 'close').length, 5);
});

test('the caller closing the listening socket ends the sessions with close events', async (t) => {
  const target = await udpTarget(t);
  const h = await startRelay(t, target.port);
  const client = await udpClient(t);
  send(client, 'x', h.port);
  await waitFor('reply', () => client.received.length === 1);
  h.socket.close();
  await waitFor('close event', () => ofType(h.events, 'close').length === 1);
  t.is(h.relay.sessionCount, 0);
});

test('stopReceiving(): no new sessions, existing ones still get their replies', async (t) => {
  const target = await udpTarget(t, { echo: false });
  const h = await startRelay(t, target.port);
  const old = await udpClient(t);
  send(old, 'before', h.port);
  await waitFor('at the target', () => target.received.length === 1);

  // Public APIs cannot stop a dgram socket reading: then new clients' datagrams are dropped.
  t.is(h.relay.stopReceiving(), !publicPathForced());
  const late = await udpClient(t);
  send(late, 'after', h.port);
  const upstream = target.received[0]!;
  target.socket.send('reply-after-stop', upstream.port, upstream.address);
  await waitFor('the reply', () => old.received.length === 1);
  t.is(old.received[0]!.data.toString(), 'reply-after-stop');
  t.is(h.relay.sessionCount, 1);
  t.is(target.received.length, 1);
  await h.relay.close();
  t.is(ofType(h.events, 'close').length, 1);
});

// ---- target names ----------------------------------------------------------------------------

test('a target name is resolved at start and re-resolved in the background for new sessions', async (t) => {
  const first = await udpTarget(t, { reply: () => Buffer.from('first') });
  // One Endpoint names both targets: the second listens on the same port of another loopback address.
  const second = await bindUdp(t, 'udp4', '127.0.0.2', first.port);
  second.on('message', (_data, rinfo) => second.send('second', rinfo.port, rinfo.address));
  let answer: ResolvedAddress = { address: '127.0.0.1', family: 4 };
  let lookups = 0;
  // Answers asynchronously, as getaddrinfo does.
  const lookup: LookupAll = (_host, callback) => {
    lookups++;
    const current = answer;
    setImmediate(() => callback(null, [current]));
  };
  const resolver = new TargetResolver({ lookup, ttlMs: 20 });

  const h = await startRelay(t, first.port, { targetHost: 'backend.test', resolver, resolveIntervalMs: 10 });
  t.is(h.relay.targetAddress, '127.0.0.1');
  const a = await udpClient(t);
  send(a, 'hi', h.port);
  await waitFor('reply from the first target', () => a.received.length === 1);
  t.is(a.received[0]!.data.toString(), 'first');
  t.true(lookups >= 1);

  answer = { address: '127.0.0.2', family: 4 };
  await waitFor('the new address', () => h.relay.targetAddress === '127.0.0.2');
  const b = await udpClient(t);
  send(b, 'hi', h.port);
  send(a, 'again', h.port);
  await waitFor('replies', () => b.received.length === 1 && a.received.length === 2);
  t.is(b.received[0]!.data.toString(), 'second');
  t.is(a.received[1]!.data.toString(), 'first', 'an existing session keeps its address');
  t.is(ofType(h.events, 'open')[1]!.target_ip, '127.0.0.2');
});

test('a target name is looked up once, not per session or datagram', async (t) => {
  const target = await udpTarget(t);
  let lookups = 0;
  const lookup: LookupAll = (_host, callback) => {
    lookups++;
    setImmediate(() => callback(null, [{ address: '127.0.0.1', family: 4 }]));
  };
  const resolver = new TargetResolver({ lookup, ttlMs: 60_000 });
  const h = await startRelay(t, target.port, { targetHost: 'backend.test', resolver, resolveIntervalMs: 60_000 });
  const clients = await Promise.all(Array.from({ length: 5 }, () => udpClient(t)));
  for (const c of clients) for (let k = 0; k < 3; k++) send(c, `d${k}`, h.port);
  await waitFor('replies', () => clients.every((c) => c.received.length === 3));
  t.is(lookups, 1);
});

test('start() rejects when the target name does not resolve', async (t) => {
  const socket = await bindUdp(t);
  const stats = new ListenerStats();
  const lookup: LookupAll = (_host, callback) => {
    setImmediate(() => callback(Object.assign(new Error('nope'), { code: 'ENOTFOUND' }), []));
  };
  const relay = new UdpRelay({
    listenerName: 'test', socket, target: { host: 'nowhere.test', port: 53 }, udp: udpSettings(), stats, batched: BATCHED,
    resolver: new TargetResolver({ lookup }),
  });
  t.teardown(() => relay.close());
  await t.throwsAsync(relay.start(), { message: /cannot resolve nowhere\.test/ });
  t.is(stats.takeDelta().errors.target_resolve, 1);
  t.is(socket.listenerCount('message'), 0);
});

// ---- the session table -----------------------------------------------------------------------

test('SessionTable keeps clients that share a port apart and promotes on delete', (t) => {
  const table = new SessionTable();
  // The table never touches the socket.
  const noSocket = {} as dgram.Socket;
  const make = (address: string, port: number) =>
    new UdpSession(address, port, address, '127.0.0.1', 53, { allow: true }, noSocket, 0, Infinity);
  const a = make('10.0.0.1', 123);
  const b = make('10.0.0.2', 123);
  const c = make('10.0.0.3', 123);
  const d = make('10.0.0.1', 124);
  for (const s of [a, b, c, d]) table.add(s);
  t.is(table.size, 4);
  t.is(table.get('10.0.0.1', 123), a);
  t.is(table.get('10.0.0.2', 123), b);
  t.is(table.get('10.0.0.3', 123), c);
  t.is(table.get('10.0.0.1', 124), d);
  t.is(table.get('10.0.0.4', 123), undefined);
  t.is(table.get('10.0.0.1', 125), undefined);
  table.delete(a);
  t.is(table.get('10.0.0.1', 123), undefined);
  t.is(table.get('10.0.0.2', 123), b);
  t.is(table.get('10.0.0.3', 123), c);
  table.delete(c);
  table.delete(c);
  t.is(table.get('10.0.0.2', 123), b);
  table.delete(b);
  t.is(table.get('10.0.0.2', 123), undefined);
  t.is(table.size, 1);
  t.deepEqual([...table.values()], [d]);
});
