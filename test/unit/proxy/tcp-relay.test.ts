/**
 * The TCP relay on real loopback sockets, in process. Each test owns its servers and closes them in
 * t.teardown; conditions are awaited with a deadline, never by sleeping; no test passes or fails on
 * speed (the few lower bounds on a pause are guaranteed by timer semantics, not by machine speed).
 */
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { Worker } from 'node:worker_threads';
import type { TcpSettings } from '../../../src/config/types.js';
import {
  DRAIN_DEADLINE_MS,
  startTcpRelay,
  type Meter,
  type RelayCloseInfo,
  type RelayOpenInfo,
  type TcpRelay,
  type TcpRelayOptions,
} from '../../../src/proxy/tcp-relay.js';
import { BULK_SIZE } from '../../../src/proxy/read-buffers.js';
import { TargetResolver, type LookupAll } from '../../../src/proxy/target-resolver.js';
import { listenEnds } from '../../helpers/servers.js';
import { collectUntilEnd, type StreamEnd } from '../../helpers/cut-transfers.js';
import { NativeTcpEnd } from '../../../src/platform/native-tcp-end.js';
import { sendsNow } from '../../../src/platform/socket-calls.js';
import { SocketEnd, socketEnds } from '../../../src/proxy/socket-end.js';
import type { TcpEnd } from '../../../src/platform/tcp-end.js';
import { tcpEnds } from '../../../src/proxy/tcp-path.js';

/** The relay runs on this process's path (PACKETPONY_PUBLIC_PATH=1: net.Socket). */
const publicPath = tcpEnds() === socketEnds;
const EndClass: { prototype: TcpEnd } = publicPath ? SocketEnd : NativeTcpEnd;
/** Whether the kernel's send queue can be seen (the addon, on native ends). */
const queueVisible = !publicPath && sendsNow();
import { ListenerStats } from '../../../src/telemetry/stats.js';

const NO_TIMEOUTS: TcpSettings = { connect_timeout: 5000, read_timeout: 0, write_timeout: 0, idle_timeout: 0 };

// ---- helpers ---------------------------------------------------------------------------------

async function waitFor(what: string, condition: () => boolean, deadlineMs = 10_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

async function listen(t: ExecutionContext, server: net.Server, host = '127.0.0.1'): Promise<number> {
  const sockets = new Set<net.Socket>();
  server.on('connection', (socket: net.Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  t.teardown(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: 0, host }, () => resolve());
  });
  return (server.address() as net.AddressInfo).port;
}

/** A backend whose accepted sockets are handed to `handler` (allowHalfOpen, errors swallowed). */
async function backend(t: ExecutionContext, handler: (socket: net.Socket) => void, host = '127.0.0.1') {
  const accepted: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {});
    accepted.push(socket);
    handler(socket);
  });
  const port = await listen(t, server, host);
  return { port, accepted };
}

interface RelayRun {
  readonly port: number;
  readonly stats: ListenerStats;
  readonly relays: TcpRelay[];
  readonly opens: RelayOpenInfo[];
  readonly closes: RelayCloseInfo[];
}

/** A listener relaying every accepted client to `target` with the given options. */
async function relayServer(
  t: ExecutionContext,
  target: { host: string; port: number },
  options: Partial<Omit<TcpRelayOptions, 'client' | 'target' | 'stats' | 'onClose' | 'onOpen'>> = {},
  listenHost = '127.0.0.1',
): Promise<RelayRun> {
  const run: RelayRun = { port: 0, stats: new ListenerStats(), relays: [], opens: [], closes: [] };
  const active = new Set<TcpRelay>();
  t.teardown(() => {
    for (const relay of active) relay.destroy('test over');
  });
  const port = await listenEnds(t, (client) => {
    const relay = startTcpRelay({
      client,
      target,
      tcp: NO_TIMEOUTS,
      stats: run.stats,
      ...options,
      onOpen: (_relay, info) => run.opens.push(info),
      onClose: (closed, info) => {
        active.delete(closed);
        run.closes.push(info);
      },
    });
    active.add(relay);
    run.relays.push(relay);
  }, listenHost);
  return { ...run, port };
}

function connect(t: ExecutionContext, port: number, host = '127.0.0.1'): net.Socket {
  const socket = net.connect({ port, host, allowHalfOpen: true });
  socket.on('error', () => {});
  t.teardown(() => {
    socket.destroy();
  });
  return socket;
}

function closed(socket: net.Socket): Promise<void> {
  return socket.destroyed && socket.closed ? Promise.resolve() : new Promise((resolve) => socket.once('close', () => resolve()));
}

/** Collects a socket's incoming data into a hash and a byte count. */
function drain(socket: net.Socket) {
  const hash = createHash('sha256');
  const state = { bytes: 0, ended: false, text: '', digest: '' };
  socket.on('data', (chunk: Buffer) => {
    hash.update(chunk);
    state.bytes += chunk.length;
    if (state.text.length < 4096) state.text += chunk.toString('latin1');
  });
  socket.on('end', () => {
    state.ended = true;
    state.digest = hash.digest('hex');
  });
  return state;
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Writes `data` in pieces, honouring backpressure, then ends the socket's write half. */
async function send(socket: net.Socket, data: Buffer, piece = 256 * 1024): Promise<void> {
  for (let offset = 0; offset < data.length; offset += piece) {
    if (!socket.write(data.subarray(offset, offset + piece))) {
      await new Promise<void>((resolve) => {
        const done = () => {
          socket.off('drain', done);
          socket.off('close', done);
          resolve();
        };
        socket.on('drain', done);
        socket.on('close', done);
      });
    }
    if (socket.destroyed) return;
  }
  socket.end();
}

/** A TCP port on which nothing listens for as long as the test runs: a connected socket's own port. */
async function refusingPort(t: ExecutionContext): Promise<number> {
  const { port } = await backend(t, () => {});
  const holder = connect(t, port);
  await new Promise((resolve) => holder.once('connect', resolve));
  return holder.localPort!;
}

/**
 * A listening socket that never accepts: a worker thread listens with backlog 1 and then blocks,
 * and we fill its accept queue, so further SYNs are dropped and a connect() hangs.
 */
async function blackHole(t: ExecutionContext): Promise<number> {
  const release = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     const server = require('node:net').createServer().listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
       parentPort.postMessage(server.address().port);
       Atomics.wait(workerData, 0, 0);
       server.close();
     });`,
    { eval: true, workerData: release },
  );
  t.teardown(async () => {
    Atomics.store(release, 0, 1);
    Atomics.notify(release, 0);
    await worker.terminate();
  });
  const port = await new Promise<number>((resolve) => worker.once('message', resolve));
  // Loopback handshakes complete within connect(), so once one filler is in, the queue is full.
  const fillers = Array.from({ length: 8 }, () => connect(t, port));
  await Promise.race(fillers.map((socket) => new Promise((resolve) => socket.once('connect', resolve))));
  return port;
}

// ---- data integrity ----------------------------------------------------------------------------

const bulk = test.macro(async (t, family: 4 | 6) => {
  const host = family === 6 ? '::1' : '127.0.0.1';
  const up = randomBytes(8 * 1024 * 1024);
  const down = randomBytes(8 * 1024 * 1024);
  let atBackend: ReturnType<typeof drain> | undefined;
  const { port } = await backend(t, (socket) => {
    atBackend = drain(socket);
    void send(socket, down);
  }, host);
  const run = await relayServer(t, { host, port }, {}, host);
  const client = connect(t, run.port, host);
  const atClient = drain(client);
  await send(client, up);
  await waitFor('both directions delivered', () => atClient.ended && atBackend?.ended === true, 60_000);
  t.is(atBackend!.digest, sha256(up));
  t.is(atClient.digest, sha256(down));
  await waitFor('relay closed', () => run.closes.length === 1);
  const [info] = run.closes;
  t.is(info!.cause, 'complete');
  t.is(info!.bytes_sent, up.length);
  t.is(info!.bytes_received, down.length);
  t.is(run.stats.bytesSent, up.length);
  t.is(run.stats.bytesReceived, down.length);
  t.is(run.opens[0]!.target_ip, host);
  t.is(run.opens[0]!.family, family);
});

test('8 MB each way arrive intact', bulk, 4);
test('IPv6 on both sides', bulk, 6);

test('a target name is resolved through the resolver, and a refused address falls back to the next', async (t) => {
  const { port } = await backend(t, (socket) => socket.end('hi'));
  // 127.0.0.2 is loopback too; nothing can listen on 127.0.0.2:port while we hold 127.0.0.1:port
  // with the same port... except a specific bind, which no test does.
  const lookups: string[] = [];
  const lookup: LookupAll = (host, callback) => {
    lookups.push(host);
    setImmediate(() => callback(null, [{ address: '127.0.0.2', family: 4 }, { address: '127.0.0.1', family: 4 }]));
  };
  const resolver = new TargetResolver({ lookup });
  const run = await relayServer(t, { host: 'backend.example.com', port }, { resolver });
  for (let i = 0; i < 2; i++) {
    const client = connect(t, run.port);
    const got = drain(client);
    await waitFor('reply', () => got.ended);
    t.is(got.text, 'hi');
    client.end();
  }
  await waitFor('both closed', () => run.closes.length === 2);
  t.deepEqual(lookups, ['backend.example.com'], 'the second connection used the cache');
  t.is(run.opens[0]!.target_ip, '127.0.0.1');
  t.true(run.closes.every((info) => info.cause === 'complete'));
});

// ---- half-close --------------------------------------------------------------------------------

test('half-close: the client ends its write side and still gets the reply sent after its FIN', async (t) => {
  const { port } = await backend(t, (socket) => {
    let request = '';
    socket.on('data', (chunk: Buffer) => (request += chunk.toString()));
    socket.on('end', () => {
      // Answer only once the client's FIN has arrived here, through the relay.
      setImmediate(() => socket.end(`reply to ${request}`));
    });
  });
  const run = await relayServer(t, { host: '127.0.0.1', port });
  const client = connect(t, run.port);
  const got = drain(client);
  client.end('question');
  await waitFor('reply after FIN', () => got.ended);
  t.is(got.text, 'reply to question');
  await waitFor('relay closed', () => run.closes.length === 1);
  t.is(run.closes[0]!.cause, 'complete');
  t.is(run.closes[0]!.error, undefined);
});

test('half-close the other way: the target ends first, the client keeps sending', async (t) => {
  let received = '';
  let backendEnded = false;
  const { port } = await backend(t, (socket) => {
    socket.end('banner');
    socket.on('data', (chunk: Buffer) => (received += chunk.toString()));
    socket.on('end', () => (backendEnded = true));
  });
  const run = await relayServer(t, { host: '127.0.0.1', port });
  const client = connect(t, run.port);
  const got = drain(client);
  await waitFor('banner and FIN', () => got.ended);
  client.write('still ');
  client.end('talking');
  await waitFor('data after the target FIN', () => backendEnded);
  t.is(received, 'still talking');
  await waitFor('relay closed', () => run.closes.length === 1);
  t.is(run.closes[0]!.cause, 'complete');
});

// ---- dial failures -------------------------------------------------------------------------------

test('a refusing target: client closed at once, target_connect reported', async (t) => {
  const port = await refusingPort(t);
  const run = await relayServer(t, { host: '127.0.0.1', port });
  const client = connect(t, run.port);
  await closed(client);
  await waitFor('close reported', () => run.closes.length === 1);
  const [info] = run.closes;
  t.is(info!.cause, 'dial_failed');
  t.is(info!.error_type, 'target_connect');
  t.false(info!.opened);
  t.regex(info!.error!, /refused/);
  t.is(run.opens.length, 0);
  t.is(run.stats.takeDelta().errors.target_connect, 1);
});

test('an unresolvable name: target_resolve reported, client closed', async (t) => {
  const run = await relayServer(t, { host: 'no-such-host.invalid', port: 80 }, { resolver: new TargetResolver() });
  const client = connect(t, run.port);
  await closed(client);
  await waitFor('close reported', () => run.closes.length === 1);
  const [info] = run.closes;
  t.is(info!.cause, 'dial_failed');
  t.is(info!.error_type, 'target_resolve');
  t.regex(info!.error!, /no-such-host\.invalid/);
  t.is(info!.target_ip, '');
  t.is(run.stats.takeDelta().errors.target_resolve, 1);
});

test('connect timeout: a target that never accepts', async (t) => {
  const port = await blackHole(t);
  const tcp = { ...NO_TIMEOUTS, connect_timeout: 300 };
  const run = await relayServer(t, { host: '127.0.0.1', port }, { tcp });
  const client = connect(t, run.port);
  await closed(client);
  await waitFor('close reported', () => run.closes.length === 1);
  const [info] = run.closes;
  t.is(info!.cause, 'dial_failed');
  t.is(info!.error_type, 'target_connect');
  t.regex(info!.error!, /timed out after 300 ms/);
});

// ---- backpressure --------------------------------------------------------------------------------

/** Writes `chunk` for ever, honouring backpressure; `state.blocked` while the kernel is full. */
function flood(socket: net.Socket, chunk: Buffer) {
  const state = { blocked: false };
  const pump = () => {
    state.blocked = false;
    while (!socket.destroyed && socket.write(chunk));
    state.blocked = true;
  };
  socket.on('drain', pump);
  pump();
  return state;
}

/** One side floods, the other never reads. What the relay holds in user space stays one buffer. */
const slowReader = test.macro(async (t, flooder: 'target' | 'client') => {
  const chunk = Buffer.alloc(1024 * 1024, 7);
  let flooding: { blocked: boolean } | undefined;
  const { port } = await backend(t, (socket) => {
    if (flooder === 'target') flooding = flood(socket, chunk);
    else socket.pause();
  });
  const run = await relayServer(t, { host: '127.0.0.1', port });
  const client = connect(t, run.port);
  if (flooder === 'client') flooding = flood(client, chunk);
  else client.pause();
  await waitFor('relay started', () => run.relays.length === 1);
  const relay = run.relays[0]!;
  let most = 0;
  const sampler = setInterval(() => (most = Math.max(most, relay.bufferedBytes)), 1);
  t.teardown(() => clearInterval(sampler));
  await waitFor('backpressure reaches the flooder', () => flooding?.blocked === true && relay.bufferedBytes > 0);
  most = Math.max(most, relay.bufferedBytes);
  clearInterval(sampler);
  const bound = BULK_SIZE;
  t.true(most <= bound, `held ${most} bytes, bound ${bound}`);
  t.true(relay.open);
  t.log(`held at most ${most} bytes`);
});

test('slow client: the relay holds at most one buffer toward it', slowReader, 'target');
test('slow target: the relay holds at most one buffer toward it', slowReader, 'client');

test('a target that closes while the client is still sending: an error, never a throw', async (t) => {
  const { port } = await backend(t, (socket) => socket.once('data', () => socket.destroy()));
  const run = await relayServer(t, { host: '127.0.0.1', port });
  const client = connect(t, run.port);
  flood(client, Buffer.alloc(256 * 1024, 1));
  await closed(client);
  await waitFor('close reported', () => run.closes.length === 1);
  t.is(run.closes[0]!.cause, 'error');
  t.regex(run.closes[0]!.error_type!, /^target_(write|read)$/);
});

// ---- timeouts ----------------------------------------------------------------------------------

test('idle_timeout closes a silent connection', async (t) => {
  const { port, accepted } = await backend(t, () => {});
  const tcp = { ...NO_TIMEOUTS, idle_timeout: 200 };
  const run = await relayServer(t, { host: '127.0.0.1', port }, { tcp });
  const client = connect(t, run.port);
  await closed(client);
  await waitFor('close reported', () => run.closes.length === 1);
  t.is(run.closes[0]!.cause, 'timeout');
  t.is(run.closes[0]!.error_type, 'timeout');
  t.regex(run.closes[0]!.error!, /idle timeout/);
  await waitFor('target side closed too', () => accepted[0]?.destroyed === true);
  t.is(run.stats.takeDelta().errors.timeout, 1);
});

test('idle_timeout never fires on a connection moving data steadily', async (t) => {
  const { port } = await backend(t, (socket) => socket.on('data', (chunk: Buffer) => socket.write(chunk)));
  const tcp = { ...NO_TIMEOUTS, idle_timeout: 1000, read_timeout: 1000 };
  const run = await relayServer(t, { host: '127.0.0.1', port }, { tcp });
  const client = connect(t, run.port);
  const got = drain(client);
  let sent = 0;
  const until = Date.now() + 3000; // three times the timeout
  while (Date.now() < until) {
    client.write('x');
    sent++;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await waitFor('echoes', () => got.bytes === sent);
  t.is(run.closes.length, 0);
  t.true(run.relays[0]!.open);
  client.end();
});

test('read_timeout closes a connection whose client never speaks', async (t) => {
  const { port } = await backend(t, () => {});
  const tcp = { ...NO_TIMEOUTS, read_timeout: 200 };
  const run = await relayServer(t, { host: '127.0.0.1', port }, { tcp });
  const client = connect(t, run.port);
  await closed(client);
  await waitFor('close reported', () => run.closes.length === 1);
  t.is(run.closes[0]!.cause, 'timeout');
  t.regex(run.closes[0]!.error!, /read timeout: the client sent nothing/);
});

test('write_timeout closes a connection whose client stopped reading', async (t) => {
  const chunk = Buffer.alloc(1024 * 1024, 7);
  const { port } = await backend(t, (socket) => void flood(socket, chunk));
  const tcp = { ...NO_TIMEOUTS, write_timeout: 300 };
  const run = await relayServer(t, { host: '127.0.0.1', port }, { tcp });
  const client = connect(t, run.port);
  client.pause();
  await waitFor('close reported', () => run.closes.length === 1);
  t.is(run.closes[0]!.cause, 'timeout');
  t.regex(run.closes[0]!.error!, /write timeout: the client accepted no data/);
});

test('read_timeout does not fire while the relay waits for a slow client to take data', async (t) => {
  const chunk = Buffer.alloc(1024 * 1024, 7);
  const { port } = await backend(t, (socket) => void flood(socket, chunk));
  const tcp = { ...NO_TIMEOUTS, read_timeout: 200 };
  const run = await relayServer(t, { host: '127.0.0.1', port }, { tcp });
  const client = connect(t, run.port);
  client.pause();
  await waitFor('relay blocked on the client', () => run.relays[0]?.bufferedBytes !== undefined && run.relays[0].bufferedBytes > 0);
  // Let several read_timeout periods pass while blocked: the relay must still be open.
  const until = Date.now() + 1000;
  await waitFor('time passes', () => Date.now() >= until || run.closes.length > 0);
  t.is(run.closes.length, 0);
  t.true(run.relays[0]!.open);
});

// ---- meter ---------------------------------------------------------------------------------------

test('the meter returning -1 cuts the connection', async (t) => {
  let backendGot = 0;
  const { port, accepted } = await backend(t, (socket) => socket.on('data', (chunk: Buffer) => (backendGot += chunk.length)));
  let metered = 0;
  const meter: Meter = (bytes) => {
    metered += bytes;
    return metered > 100_000 ? -1 : 0;
  };
  const run = await relayServer(t, { host: '127.0.0.1', port }, { meter });
  const client = connect(t, run.port);
  void send(client, randomBytes(1024 * 1024), 16 * 1024);
  await closed(client);
  await waitFor('close reported', () => run.closes.length === 1);
  const [info] = run.closes;
  t.is(info!.cause, 'dropped');
  t.regex(info!.error!, /rate limit/);
  t.true(info!.bytes_sent <= 100_000, `forwarded ${info!.bytes_sent}`);
  // Reset, or (when the reset came before the backend accepted the connection) ended.
  await waitFor('target side closed', () => accepted[0] !== undefined && (accepted[0].destroyed || accepted[0].readableEnded));
  t.true(backendGot <= 100_000);
});

test('a drop resets only once what was relayed has reached the peer: it gets every counted byte, then the reset', async (t) => {
  const upload = randomBytes(1024 * 1024);
  const ends: Promise<StreamEnd>[] = [];
  const { port } = await backend(t, (socket) => ends.push(collectUntilEnd(socket)));
  let metered = 0;
  const meter: Meter = (bytes) => {
    metered += bytes;
    return metered > 300_000 ? -1 : 0;
  };
  // Reads of at most 64 KiB, as under a real cap this small (bulkReadsUnder): the cut comes within
  // one read of the meter's 300,000 bytes.
  const run = await relayServer(t, { host: '127.0.0.1', port }, { meter, bulkReads: false });
  const client = connect(t, run.port);
  const clientEnd = collectUntilEnd(client);
  void send(client, upload, 64 * 1024);
  await waitFor('the backend connection', () => ends.length === 1);
  const got = await ends[0]!;
  await waitFor('close reported', () => run.closes.length === 1);
  const [info] = run.closes;
  t.is(info!.cause, 'dropped');
  // Without the addon the kernel's send queue cannot be seen (then the relay waits a grace period).
  const unconfirmed = queueVisible ? '' : '; delivery of the last bytes unconfirmed (the send queue cannot be seen without the addon or on the public path)';
  t.is(info!.error, `dropped by the rate limit (client → target)${unconfirmed}`);
  t.is(got.end, 'reset', `the target learned of the cut (${got.code ?? 'a clean end'})`);
  t.is(got.data.length, info!.bytes_sent, 'the close counts exactly what arrived');
  t.true(got.data.equals(upload.subarray(0, got.data.length)), 'byte for byte');
  t.true(got.data.length > 300_000 - 64 * 1024, `${got.data.length} bytes arrived`);
  t.is(run.stats.takeDelta().bytes_sent, info!.bytes_sent, 'the metrics agree');
  t.is((await clientEnd).end, 'reset');
});

// Only a peer that stops reading with full buffers leaves a queue that does not drain, and Node
// cannot shrink a TCP socket's receive buffer to make one on loopback; so this test stands in for
// the kernel's answer (serial: the prototype is patched for no other test meanwhile).
test.serial('a drop toward a peer that takes nothing: reset at the deadline, and what never arrived is not counted', async (t) => {
  const meter: Meter = (_bytes, direction) => (direction === 'sent' ? -1 : 0);
  const original = EndClass.prototype.unsentBytes;
  const stuck = 5000;
  let clientEnd: TcpEnd | null = null;
  EndClass.prototype.unsentBytes = function (this: TcpEnd) {
    return this === clientEnd ? stuck : original.call(this);
  };
  t.teardown(() => {
    EndClass.prototype.unsentBytes = original;
  });
  // The backend speaks first: 20,000 bytes reach the client; then the client's first byte is dropped.
  const greeting = randomBytes(20_000);
  const talker = await backend(t, (socket) => socket.write(greeting));
  const run = await relayServer(t, { host: '127.0.0.1', port: talker.port }, { meter });
  const client = connect(t, run.port);
  const got = collectUntilEnd(client);
  await waitFor('the greeting relayed', () => run.relays[0] !== undefined && run.relays[0].bytesReceived === greeting.length);
  clientEnd = run.relays[0]!.client;
  const cutAt = performance.now();
  client.write('x');
  await waitFor('close reported', () => run.closes.length === 1, 10_000);
  const waited = performance.now() - cutAt;
  const [info] = run.closes;
  t.is(info!.bytes_received, greeting.length - stuck, 'the bytes still queued are not counted as delivered');
  t.is(info!.error, `dropped by the rate limit (client → target); ${stuck} bytes to the client did not arrive before the reset (not counted)`);
  t.true(waited >= DRAIN_DEADLINE_MS - 1, `reset after ${waited.toFixed(0)} ms`);
  t.is(run.stats.takeDelta().bytes_received, greeting.length - stuck, 'the metrics agree with the close event');
  t.is((await got).end, 'reset');
});

test('the meter returning a delay pauses that direction, then the data flows on', async (t) => {
  const { port } = await backend(t, (socket) => socket.on('data', (chunk: Buffer) => socket.write(chunk)));
  const calls: Array<{ at: number; direction: string }> = [];
  const meter: Meter = (_bytes, direction) => {
    calls.push({ at: performance.now(), direction });
    return calls.filter((call) => call.direction === 'sent').length === 1 && direction === 'sent' ? 300 : 0;
  };
  const run = await relayServer(t, { host: '127.0.0.1', port }, { meter });
  const client = connect(t, run.port);
  const got = drain(client);
  client.write('first');
  await waitFor('first echoed', () => got.bytes === 5);
  client.write('second');
  await waitFor('second echoed', () => got.bytes === 11);
  t.is(got.text, 'firstsecond');
  const sent = calls.filter((call) => call.direction === 'sent');
  t.is(sent.length, 2);
  // A timer never fires early (Node may round by up to 1 ms).
  t.true(sent[1]!.at - sent[0]!.at >= 299, `second chunk read after ${sent[1]!.at - sent[0]!.at} ms`);
  client.end();
});

// ---- resets and destroy --------------------------------------------------------------------------

test('a reset from the target resets the client', async (t) => {
  const { port } = await backend(t, (socket) => socket.once('data', () => socket.resetAndDestroy()));
  const run = await relayServer(t, { host: '127.0.0.1', port });
  const client = connect(t, run.port);
  let clientError = '';
  client.on('error', (err: NodeJS.ErrnoException) => (clientError = err.code ?? ''));
  client.write('hello');
  await closed(client);
  await waitFor('close reported', () => run.closes.length === 1);
  t.is(run.closes[0]!.cause, 'error');
  t.is(run.closes[0]!.error_type, 'target_read');
  t.regex(run.closes[0]!.error!, /ECONNRESET/);
  t.is(clientError, 'ECONNRESET');
});

test('a reset from the client closes the target', async (t) => {
  const { port, accepted } = await backend(t, () => {});
  const run = await relayServer(t, { host: '127.0.0.1', port });
  const client = connect(t, run.port);
  await waitFor('relay open', () => run.opens.length === 1 && accepted.length === 1);
  client.resetAndDestroy();
  await waitFor('target socket closed', () => accepted[0]!.destroyed);
  await waitFor('close reported', () => run.closes.length === 1);
  t.is(run.closes[0]!.cause, 'error');
  t.is(run.closes[0]!.error_type, 'client_read');
});

test('destroy() ends both sockets and reports once', async (t) => {
  const { port, accepted } = await backend(t, () => {});
  const run = await relayServer(t, { host: '127.0.0.1', port });
  const client = connect(t, run.port);
  await waitFor('relay open', () => run.opens.length === 1 && accepted.length === 1);
  run.relays[0]!.destroy('shutdown');
  run.relays[0]!.destroy('again');
  await closed(client);
  await waitFor('target socket closed', () => accepted[0]!.destroyed);
  await waitFor('close reported', () => run.closes.length === 1);
  t.is(run.closes[0]!.cause, 'destroyed');
  t.is(run.closes[0]!.error, 'shutdown');
  t.is(run.closes[0]!.error_type, undefined);
  t.false(run.relays[0]!.open);
});

test('destroy() while the target name is still resolving', async (t) => {
  let answer: (() => void) | undefined;
  const lookup: LookupAll = (_host, callback) => {
    answer = () => callback(null, [{ address: '127.0.0.1', family: 4 }]);
  };
  const { port, accepted } = await backend(t, () => {});
  const run = await relayServer(t, { host: 'slow.example', port }, { resolver: new TargetResolver({ lookup }) });
  const client = connect(t, run.port);
  await waitFor('lookup started', () => answer !== undefined);
  run.relays[0]!.destroy();
  await closed(client);
  answer!();
  await waitFor('close reported', () => run.closes.length === 1);
  t.is(run.closes[0]!.cause, 'destroyed');
  // A connection of our own made after the answer reaches the backend; the relay's never does.
  const probe = connect(t, port);
  await waitFor('probe accepted', () => accepted.length >= 1);
  probe.destroy();
  t.is(accepted.length, 1, 'no dial after destroy');
});
