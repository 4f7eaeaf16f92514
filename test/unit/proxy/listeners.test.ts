/**
 * The child's TCP and UDP listeners in process, on loopback: what they count and report when the
 * policy steps in. (The relays have their own tests; these cover the wiring to the policy.) Each
 * test owns its sockets and closes them; conditions are awaited with a deadline.
 */
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { join } from 'node:path';
import { readConfig } from '../../../src/config/load.js';
import type { ListenerConfig } from '../../../src/config/types.js';
import { ListenerPolicy } from '../../../src/policy/index.js';
import { TcpListener, type ListenerDeps } from '../../../src/proxy/tcp-listener.js';
import { UdpListener } from '../../../src/proxy/udp-listener.js';
import { DenyAggregator } from '../../../src/telemetry/deny-aggregator.js';
import type { DenyEvent, LogEvent } from '../../../src/telemetry/events.js';
import { ListenerStats } from '../../../src/telemetry/stats.js';
import { configDir } from '../../helpers/config-dir.js';
import { waitFor } from '../../helpers/wait-for.js';

const KB = 1024;

function listenerConfig(t: ExecutionContext, yaml: string): ListenerConfig {
  const dir = configDir(t, { 'packetpony.yaml': '', 'conf.d/lim.yaml': yaml });
  const report = readConfig({ configFile: join(dir, 'packetpony.yaml') });
  t.is(report.errorCount, 0, JSON.stringify(report.issues));
  return report.listeners[0]!;
}

function deps(config: ListenerConfig): ListenerDeps & { events: LogEvent[] } {
  const events: LogEvent[] = [];
  const emit = (event: LogEvent): void => void events.push(event);
  return {
    config,
    policy: ListenerPolicy.fromConfig(config, () => performance.now()),
    stats: new ListenerStats(),
    denies: new DenyAggregator(emit, { listener: config.name, protocol: config.protocol }),
    emit,
    events,
  };
}

/** A TcpListener on a free loopback port, stopped when the test ends. */
async function listenTcp(t: ExecutionContext, d: ListenerDeps): Promise<net.AddressInfo> {
  const listener = new TcpListener(d);
  const address = await listener.listen({ port: 0, host: '127.0.0.1' });
  t.teardown(() => {
    listener.stopAccepting();
    return listener.finish(0);
  });
  return address;
}

function denies(events: readonly LogEvent[]): DenyEvent[] {
  return events.filter((e): e is DenyEvent => e.kind === 'deny');
}

async function udpSocket(t: ExecutionContext, onMessage?: (socket: dgram.Socket, data: Buffer, from: dgram.RemoteInfo) => void): Promise<dgram.Socket> {
  const socket = dgram.createSocket('udp4');
  t.teardown(() => new Promise<void>((resolve) => socket.close(() => resolve())));
  if (onMessage) socket.on('message', (data, from) => onMessage(socket, data, from));
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  return socket;
}

test('TCP: a transfer cut by the bandwidth cap (drop) is counted and reported as a bandwidth_limit refusal', async (t) => {
  const backend = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.end(Buffer.alloc(512 * KB));
  });
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
  t.teardown(() => void backend.close());
  const config = listenerConfig(
    t,
    `protocol: tcp\nlisten_address: "127.0.0.1:1"\ntarget_address: "127.0.0.1:${(backend.address() as net.AddressInfo).port}"\nallowlist: ["127.0.0.1"]\nrate_limits:\n  max_bandwidth_per_ip: "100KB"\n  bandwidth_window: "1m"\n`,
  );
  const d = deps(config);
  const address = await listenTcp(t, d);
  const client = net.connect(address.port, '127.0.0.1');
  client.on('error', () => {});
  client.resume();
  const clientPort = await new Promise<number>((resolve) => client.once('connect', () => resolve(client.localPort!)));
  await waitFor(() => d.events.some((e) => e.kind === 'connection' && e.event_type === 'close'), 'the close event');
  const [deny] = denies(d.events);
  t.like(deny, { reason: 'bandwidth_limit', action: 'drop', source_ip: '127.0.0.1', source_port: clientPort });
  t.deepEqual(d.stats.takeDelta().rate_limit_drops, { bandwidth_limit: 1 });
  client.destroy();
});

test('UDP: bandwidth refusals and violations name the client port', async (t) => {
  const backend = await udpSocket(t, (socket, data, from) => socket.send(data, from.port, from.address));
  const config = listenerConfig(
    t,
    `protocol: udp\nlisten_address: "127.0.0.1:1"\ntarget_address: "127.0.0.1:${backend.address().port}"\nallowlist: ["127.0.0.1"]\nrate_limits:\n  max_bandwidth_per_ip: "1KB"\n  bandwidth_window: "1m"\n`,
  );
  const d = deps(config);
  const listener = new UdpListener(d, 'IPv4');
  const address = await listener.listen({ port: 0, address: '127.0.0.1' });
  t.teardown(() => listener.finish(0));
  const replies: Buffer[] = [];
  const client = await udpSocket(t, (_socket, data) => void replies.push(data));
  // 400 bytes each way per exchange: the third request crosses 1 KB.
  for (let i = 0; i < 3; i++) client.send(Buffer.alloc(400), address.port, '127.0.0.1');
  await waitFor(() => denies(d.events).length > 0, 'a deny event');
  t.like(denies(d.events)[0], { reason: 'bandwidth_limit', source_port: client.address().port });
});

test('UDP: log_only lets a session over max_total_connections through instead of the relay refusing it', async (t) => {
  const backend = await udpSocket(t, (socket, data, from) => socket.send(data, from.port, from.address));
  const config = listenerConfig(
    t,
    `protocol: udp\nlisten_address: "127.0.0.1:1"\ntarget_address: "127.0.0.1:${backend.address().port}"\nallowlist: ["127.0.0.1"]\nrate_limits:\n  max_total_connections: 1\n  action: log_only\n`,
  );
  const d = deps(config);
  const listener = new UdpListener(d, 'IPv4');
  const address = await listener.listen({ port: 0, address: '127.0.0.1' });
  t.teardown(() => listener.finish(0));
  const answered: number[] = [];
  const clients = await Promise.all([0, 1].map((i) => udpSocket(t, () => void answered.push(i))));
  for (const client of clients) client.send('hello', address.port, '127.0.0.1');
  await waitFor(() => answered.length === 2, 'both clients answered');
  t.is(listener.active, 2);
  t.like(denies(d.events)[0], { reason: 'total_limit', action: 'log_only' });
  t.is(d.stats.takeDelta().rate_limit_drops.session_limit, undefined);
});

test('TCP: both sockets of a relayed connection have keepalive (the client side inherited from the listening socket on Linux, the target side after a second)', async (t) => {
  // ss shows the keepalive timer of each socket; without it (not Linux) there is nothing to look at.
  let ss: string | null = null;
  try {
    ss = execFileSync('ss', ['-V'], { encoding: 'utf8' });
  } catch {
    ss = null;
  }
  if (process.platform !== 'linux' || ss === null) {
    t.log('ss is not available here: nothing to check');
    t.pass();
    return;
  }
  const held: net.Socket[] = [];
  const backend = net.createServer((socket) => {
    socket.on('error', () => {});
    held.push(socket);
  });
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const socket of held) socket.destroy();
    backend.close();
  });
  const backendPort = (backend.address() as net.AddressInfo).port;
  const config = listenerConfig(t, `protocol: tcp\nlisten_address: "127.0.0.1:1"\ntarget_address: "127.0.0.1:${backendPort}"\nallowlist: ["127.0.0.1"]\n`);
  const d = deps(config);
  const address = await listenTcp(t, d);
  const client = net.connect(address.port, '127.0.0.1');
  client.on('error', () => {});
  t.teardown(() => void client.destroy());
  await waitFor(() => d.events.some((e) => e.kind === 'connection' && e.event_type === 'open'), 'the open event');
  const sockets = (filter: string): string =>
    execFileSync('ss', ['-tnoH', 'state', 'established', filter], { encoding: 'utf8' });
  // Our accepted socket (source port = the listener's) and our dialled one (destination = the backend).
  const accepted = sockets(`( sport = :${address.port} )`);
  t.regex(accepted, /timer:\(keepalive/, accepted);
  // The dialled one gets it once the connection has lived a second (keepalive-later.ts).
  let dialled = '';
  await waitFor(() => /timer:\(keepalive/.test((dialled = sockets(`( dport = :${backendPort} )`))), 'keepalive on the dialled socket');
  t.regex(dialled, /timer:\(keepalive/, dialled);
});
