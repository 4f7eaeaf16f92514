/**
 * The relay's read buffers: small slices of shared slabs per direction, a large buffer only while a
 * direction moves bulk data (1 MiB within a per-process budget, 64 KiB past it). The pools are process-wide, so the tests in this file run serially and
 * read them before and after; other test files run in other worker processes.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import type { RateLimits, TcpSettings } from '../../../src/config/types.js';
import { BULK_SIZE, LARGE_SIZE, MAX_BULK_LENT, SMALL_SIZE, bulkReadsUnder, giveLarge, giveSmall, pooledBuffers, takeLarge, takeSmall } from '../../../src/proxy/read-buffers.js';
import { SHRINK_AFTER } from '../../../src/proxy/relay-flow.js';
import { startTcpRelay, type RelayCloseInfo } from '../../../src/proxy/tcp-relay.js';
import { ListenerStats } from '../../../src/telemetry/stats.js';
import { listen, listenEnds } from '../../helpers/servers.js';
import { waitFor } from '../../helpers/wait-for.js';

const NO_TIMEOUTS: TcpSettings = { connect_timeout: 5000, read_timeout: 0, write_timeout: 0, idle_timeout: 0 };

/**
 * A target that hashes what it receives and answers each line `ping` with `pong`, and a relay in
 * front of it. Returns the relay's port, the target's digest state and the relays' close reports.
 */
async function setUp(t: ExecutionContext) {
  const received = { bytes: 0, hash: createHash('sha256'), digest: '' };
  const target = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {});
    let line = '';
    socket.on('data', (chunk: Buffer) => {
      received.bytes += chunk.length;
      received.hash.update(chunk);
      line += chunk.toString('latin1');
      if (line.length > 16) line = line.slice(-16);
      if (line.endsWith('ping\n')) {
        line = '';
        socket.write('pong\n');
      }
    });
    socket.on('end', () => {
      received.digest = received.hash.digest('hex');
      socket.end();
    });
  });
  const targetPort = await listen(t, target);
  const closes: RelayCloseInfo[] = [];
  const port = await listenEnds(t, (client) => {
    const relay = startTcpRelay({ client, target: { host: '127.0.0.1', port: targetPort }, tcp: NO_TIMEOUTS, stats: new ListenerStats(), onClose: (_r, info) => closes.push(info) });
    t.teardown(() => relay.destroy('test over'));
  });
  return { port, received, closes };
}

/** Sends `ping` and waits for the `pong` (one read on each side of the relay). */
async function pingPong(socket: net.Socket): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let got = '';
    const onData = (chunk: Buffer) => {
      got += chunk.toString();
      if (got.includes('pong\n')) {
        socket.off('data', onData);
        socket.off('error', reject);
        resolve();
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write('ping\n');
  });
}

function connect(t: ExecutionContext, port: number): net.Socket {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => {});
  t.teardown(() => void socket.destroy());
  return socket;
}

test.serial('small buffers are distinct slices of shared slabs, and are reused once given back', (t) => {
  const a = takeSmall();
  const b = takeSmall();
  t.is(a.length, SMALL_SIZE);
  t.is(b.length, SMALL_SIZE);
  t.not(a.buffer.byteLength, SMALL_SIZE, 'a slice of a larger slab');
  a.fill(1);
  b.fill(2);
  t.true(a.every((byte) => byte === 1), 'slices do not overlap');
  const pooled = pooledBuffers().small;
  giveSmall(a);
  t.is(pooledBuffers().small, pooled + 1);
  t.is(takeSmall(), a);
  giveSmall(a);
  giveSmall(b);
});

test.serial(`large buffers are ${BULK_SIZE / 1024} KiB for the first ${MAX_BULK_LENT} lent at once, ${LARGE_SIZE / 1024} KiB past that, and both are reused`, (t) => {
  const before = pooledBuffers();
  const modest = takeLarge(false);
  t.is(modest.length, LARGE_SIZE, 'a relay that asked for no bulk reads');
  t.is(pooledBuffers().bulkLent, before.bulkLent, 'and not counted against the budget');
  giveLarge(modest);
  const lent = Array.from({ length: MAX_BULK_LENT - before.bulkLent }, () => takeLarge(true));
  t.true(lent.every((b) => b.length === BULK_SIZE));
  t.is(pooledBuffers().bulkLent, MAX_BULK_LENT);
  const past = takeLarge(true);
  t.is(past, modest, 'the budget is spent: the pooled 64 KiB buffer');
  const first = lent[0]!;
  giveLarge(first);
  t.is(pooledBuffers().bulkLent, MAX_BULK_LENT - 1);
  t.is(takeLarge(true), first, 'a bulk buffer again, the pooled one');
  for (const b of lent) giveLarge(b);
  giveLarge(past);
  const after = pooledBuffers();
  t.is(after.bulkLent, before.bulkLent, 'every bulk buffer returned to the budget');
  t.true(after.bulk >= 1 && after.bulk <= 4, `a few bulk buffers kept idle, not all (${after.bulk})`);
  t.is(after.large, Math.max(before.large, 1), 'the 64 KiB one pooled again');
  const again = takeLarge(true);
  t.is(again.length, BULK_SIZE, 'the budget is there again');
  t.is(pooledBuffers().bulk, after.bulk - 1);
  giveLarge(again);
});

test('bulk reads only where a cap that cuts (drop) is at least 16 of them per window: a read is one chunk to the meter', (t) => {
  const MB = 1_000_000;
  const limits = (action: RateLimits['action'], cap: number, throttleMinimum = 0): RateLimits => ({
    max_connections_per_ip: 0,
    connections_window: 60_000,
    max_connection_attempts_per_ip: 0,
    attempts_window: 60_000,
    max_bandwidth_per_ip: cap,
    bandwidth_window: 60_000,
    max_total_connections: 0,
    action,
    throttle_minimum: throttleMinimum,
  });
  t.true(bulkReadsUnder(limits('drop', 0)), 'no bandwidth limit');
  t.false(bulkReadsUnder(limits('drop', MB)), 'a 1 MB cap: a 1 MiB chunk would be cut whole');
  t.false(bulkReadsUnder(limits('drop', 16 * BULK_SIZE - 1)));
  t.true(bulkReadsUnder(limits('drop', 16 * BULK_SIZE)));
  t.true(bulkReadsUnder(limits('log_only', MB)), 'log_only cuts nothing');
  t.true(bulkReadsUnder(limits('throttle', MB, 512_000)), 'throttled reads are sized by the pace (readLimit), not by the buffer');
  t.true(bulkReadsUnder(limits('throttle', 0, 512_000)), 'throttle with no bandwidth cap meters nothing');
});

test.serial('a chatty connection never takes a large buffer; its small ones go back to the pool at close', async (t) => {
  const { port, closes } = await setUp(t);
  const before = pooledBuffers();
  const client = connect(t, port);
  for (let i = 0; i < 20; i++) await pingPong(client);
  const during = pooledBuffers();
  t.deepEqual([during.bulkLent, during.large, during.small], [before.bulkLent, before.large, Math.max(0, before.small - 2)], 'two small buffers in use, no large one');
  client.end();
  await waitFor(() => closes.length === 1, 'relay closed');
  t.is(closes[0]!.cause, 'complete');
  const after = pooledBuffers();
  t.deepEqual([after.bulkLent, after.large, after.small], [before.bulkLent, before.large, Math.max(before.small, 2)]);
});

test.serial(`bulk data reads into a large buffer, given back after ${SHRINK_AFTER} short reads while the connection stays open`, async (t) => {
  const { port, received, closes } = await setUp(t);
  const client = connect(t, port);
  await pingPong(client);
  const lentBefore = pooledBuffers().bulkLent;
  const bulk = randomBytes(4 * 1024 * 1024);
  client.write(bulk);
  await waitFor(() => received.bytes >= bulk.length + 5, 'bulk data at the target');
  // The client → target direction now reads into a bulk buffer taken from the pool (or allocated).
  t.is(pooledBuffers().bulkLent, lentBefore + 1, 'one bulk buffer lent');
  // Short reads: the first ones still land in the large buffer, then it goes back.
  for (let i = 0; i < SHRINK_AFTER + 1; i++) await pingPong(client);
  t.is(pooledBuffers().bulkLent, lentBefore, 'the bulk buffer was given back while the connection is open');
  // And the connection still relays correctly, in both buffer sizes.
  const more = randomBytes(3 * BULK_SIZE + 17);
  client.end(more);
  await waitFor(() => closes.length === 1, 'relay closed');
  const expected = createHash('sha256');
  expected.update('ping\n');
  expected.update(bulk);
  for (let i = 0; i < SHRINK_AFTER + 1; i++) expected.update('ping\n');
  expected.update(more);
  t.is(received.digest, expected.digest('hex'));
  t.is(closes[0]!.cause, 'complete');
});
