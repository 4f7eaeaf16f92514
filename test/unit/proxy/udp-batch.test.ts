/**
 * The batched datagram path on its own (udp-batch.ts over src/native/udp_batch.c): reading a
 * batch with lengths and source addresses, replies through sendmmsg, oversize datagrams, failed
 * sends, and the hand-back of a socket's descriptor when it closes. Loopback only; every socket
 * and batch is closed at teardown.
 */
import avaTest, { type ExecutionContext } from 'ava';
import { publicPathForced } from '../../../src/platform/index.js';
/** These look at Node's internals themselves: with PACKETPONY_PUBLIC_PATH=1 there are none to look at. */
const test = publicPathForced() ? Object.assign(avaTest.skip, { serial: avaTest.serial.skip }) : avaTest;

import { spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { takeOverReading } from '../../../src/platform/index.js';
import {
  addressOf, DatagramBatch, loadUdpBatch, R_ADDR, R_ID, R_LENGTH, R_OFFSET, R_PORT, R_SCOPE, R_TRUNCATED,
  RECV_STRIDE, udpBatchUnavailableReason, type UdpBatchAddon,
} from '../../../src/proxy/udp-batch.js';
import { waitFor } from '../../helpers/wait-for.js';

interface Received {
  readonly id: number;
  readonly data: Buffer;
  readonly length: number;
  readonly truncated: boolean;
  readonly port: number;
  readonly address: string;
  readonly words: readonly number[];
}

/** A dgram socket's descriptor, read from Node's private state as src/platform/dgram-internals.ts does. */
function descriptorOf(socket: dgram.Socket): number | undefined {
  const key = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'state symbol')!;
  return (socket as unknown as Record<symbol, { handle?: { fd?: number } }>)[key]?.handle?.fd;
}

function addonOrFail(t: ExecutionContext): UdpBatchAddon {
  const addon = loadUdpBatch();
  if (addon === null) throw new Error(`the batched UDP path is not available: ${udpBatchUnavailableReason()}`);
  t.truthy(addon);
  return addon;
}

async function boundSocket(t: ExecutionContext, type: 'udp4' | 'udp6' = 'udp4', connectTo?: number): Promise<dgram.Socket> {
  const socket = dgram.createSocket(type);
  const host = type === 'udp6' ? '::1' : '127.0.0.1';
  await new Promise<void>((resolve) => socket.bind(0, host, resolve));
  if (connectTo !== undefined) await new Promise<void>((resolve) => socket.connect(connectTo, host, resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    try {
      socket.close(() => resolve());
    } catch {
      resolve();
    }
  }));
  return socket;
}

/** A batch that records everything it receives; `onBatch` may answer with sends. */
function recordingBatch(t: ExecutionContext, slotBytes: number, family: 4 | 6, onBatch?: (batch: DatagramBatch, from: number, count: number) => void) {
  const received: Received[] = [];
  const batches: number[] = [];
  const batch: DatagramBatch = new DatagramBatch(addonOrFail(t), slotBytes, 16, (count) => {
    batches.push(count);
    const recv = batch.recv;
    const from = received.length;
    for (let e = 0; e < count * RECV_STRIDE; e += RECV_STRIDE) {
      const length = recv[e + R_LENGTH]!;
      const offset = recv[e + R_OFFSET]!;
      received.push({
        id: recv[e + R_ID]!,
        data: Buffer.from(batch.arena.subarray(offset, offset + Math.min(Math.max(length, 0), slotBytes))),
        length,
        truncated: recv[e + R_TRUNCATED] === 1,
        port: recv[e + R_PORT]!,
        address: addressOf(recv, e, family),
        words: [recv[e + R_ADDR]!, recv[e + R_ADDR + 1]!, recv[e + R_ADDR + 2]!, recv[e + R_ADDR + 3]!, recv[e + R_SCOPE]!],
      });
    }
    onBatch?.(batch, from, count);
  });
  t.teardown(() => batch.close());
  return { batch, received, batches };
}

test('the batched path is built and loads on Linux (npm run build compiles it)', (t) => {
  if (process.platform !== 'linux') {
    t.is(loadUdpBatch(), null);
    return;
  }
  t.not(loadUdpBatch(), null, udpBatchUnavailableReason());
});

test('datagrams are read in batches with their length, source port and address; replies go back through the queue', async (t) => {
  const listener = await boundSocket(t);
  const client = await boundSocket(t);
  const replies: string[] = [];
  client.on('message', (data) => replies.push(data.toString()));
  const { batch, received } = recordingBatch(t, 64, 4, (b, from, count) => {
    for (let i = from; i < from + count; i++) {
      const r = received[i]!;
      // Echo from the arena, to the address words the datagram came with.
      const e = (i - from) * RECV_STRIDE;
      b.queueTo(r.id, b.recv[e + R_OFFSET]!, r.length, r.port, r.words[0]!, r.words[1]!, r.words[2]!, r.words[3]!, r.words[4]!);
    }
    t.is(b.flush(), 0);
  });
  const fd = takeOverReading(listener, null);
  t.not(fd, null);
  const id = batch.watch(fd!);
  t.true(id >= 0);
  const port = listener.address().port;
  for (const word of ['one', 'two', 'three', '']) client.send(word, port, '127.0.0.1');
  await waitFor(() => replies.length === 4, 'four echoes');
  t.deepEqual(replies, ['one', 'two', 'three', '']);
  t.deepEqual(received.map((r) => r.data.toString()), ['one', 'two', 'three', '']);
  for (const r of received) {
    t.is(r.id, id);
    t.is(r.port, client.address().port);
    t.is(r.address, '127.0.0.1');
    t.false(r.truncated);
  }
});

test('a datagram longer than a slot is marked truncated with its real length; the next is whole', async (t) => {
  const listener = await boundSocket(t);
  const client = await boundSocket(t);
  const { batch, received } = recordingBatch(t, 64, 4);
  batch.watch(takeOverReading(listener, null)!);
  const port = listener.address().port;
  client.send(Buffer.alloc(65, 0x61), port, '127.0.0.1');
  client.send(Buffer.alloc(64, 0x62), port, '127.0.0.1');
  await waitFor(() => received.length === 2, 'two datagrams');
  t.deepEqual(received.map((r) => [r.length, r.truncated]), [[65, true], [64, false]]);
  t.is(received[1]!.data.toString(), 'b'.repeat(64));
});

test('IPv6: addresses come as Node writes them, and replies reach the sender', async (t) => {
  const probe = dgram.createSocket('udp6');
  const ok = await new Promise<boolean>((resolve) => {
    probe.once('error', () => resolve(false));
    probe.bind(0, '::1', () => resolve(true));
  });
  probe.close();
  if (!ok) {
    t.log('no IPv6 loopback here');
    t.pass();
    return;
  }
  const listener = await boundSocket(t, 'udp6');
  const client = await boundSocket(t, 'udp6');
  const replies: string[] = [];
  client.on('message', (data) => replies.push(data.toString()));
  const { batch, received } = recordingBatch(t, 64, 6, (b, from) => {
    const r = received[from]!;
    b.queueTo(r.id, b.recv[R_OFFSET]!, r.length, r.port, r.words[0]!, r.words[1]!, r.words[2]!, r.words[3]!, r.words[4]!);
    b.flush();
  });
  batch.watch(takeOverReading(listener, null)!);
  client.send('six', listener.address().port, '::1');
  await waitFor(() => replies.length === 1, 'the echo over ::1');
  t.is(received[0]!.address, '::1');
  t.is(replies[0], 'six');
});

test('addressOf writes IPv4-mapped peers of an IPv6 socket as ::ffff:a.b.c.d', (t) => {
  const recv = new Int32Array(RECV_STRIDE);
  const bytes = new Uint8Array(recv.buffer, R_ADDR * 4, 16);
  bytes.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7]);
  t.is(addressOf(recv, 0, 6), '::ffff:192.0.2.7');
  t.is(addressOf(recv, 0, 4), '192.0.2.7');
  bytes.set([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  t.is(addressOf(recv, 0, 6), '2001:db8::1');
});

test('a send on a socket no longer watched fails with EBADF and is reported, the others go out', async (t) => {
  const listener = await boundSocket(t);
  const gone = await boundSocket(t);
  const client = await boundSocket(t);
  const replies: string[] = [];
  client.on('message', (data) => replies.push(data.toString()));
  const failures: Array<[number, number]> = [];
  let goneId = -1;
  const { batch, received } = recordingBatch(t, 64, 4, (b, from) => {
    const r = received[from]!;
    b.queueTo(goneId, b.recv[R_OFFSET]!, r.length, r.port, r.words[0]!, r.words[1]!, r.words[2]!, r.words[3]!, 0);
    b.queueTo(r.id, b.recv[R_OFFSET]!, r.length, r.port, r.words[0]!, r.words[1]!, r.words[2]!, r.words[3]!, 0);
    t.is(b.flush(), 1);
    b.failures((id, errno) => failures.push([id, errno]));
  });
  batch.watch(takeOverReading(listener, null)!);
  goneId = batch.watch(takeOverReading(gone, null)!);
  batch.unwatch(goneId);
  client.send('x', listener.address().port, '127.0.0.1');
  await waitFor(() => replies.length === 1, 'the one good reply');
  t.deepEqual(failures, [[goneId, 9]]); // EBADF
});

test.serial('closing a watched socket stops the watch first: the next socket on that descriptor is Node\'s again', async (t) => {
  const { batch, received } = recordingBatch(t, 64, 4);
  const taken = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => taken.bind(0, '127.0.0.1', resolve));
  let id = -1;
  const fd = takeOverReading(taken, () => batch.unwatch(id));
  id = batch.watch(fd!);
  t.true(id >= 0);
  await new Promise<void>((resolve) => taken.close(() => resolve()));
  // Linux hands out the lowest free descriptor: the next socket gets the same number.
  const next = await boundSocket(t);
  t.is(descriptorOf(next), fd ?? undefined, 'the descriptor number was reused');
  const seen: string[] = [];
  next.on('message', (data) => seen.push(data.toString()));
  const client = await boundSocket(t);
  client.send('for node', next.address().port, '127.0.0.1');
  await waitFor(() => seen.length === 1, 'Node to receive on the reused descriptor');
  t.deepEqual(seen, ['for node']);
  t.is(received.length, 0);
});

test('an exception thrown by the batch callback reaches process \'uncaughtException\' (no abort)', (t) => {
  addonOrFail(t);
  const module = new URL('../../../src/proxy/udp-batch.js', import.meta.url).href;
  const script = `
    import dgram from 'node:dgram';
    import { DatagramBatch, loadUdpBatch } from ${JSON.stringify(module)};
    const { takeOverReading } = await import(${JSON.stringify(new URL('../../../src/platform/dgram-internals.js', import.meta.url).href)});
    const socket = dgram.createSocket('udp4');
    socket.bind(0, '127.0.0.1', () => {
      const batch = new DatagramBatch(loadUdpBatch(), 64, 4, () => { throw new Error('thrown in the batch'); });
      batch.watch(takeOverReading(socket, null));
      process.on('uncaughtException', (err) => {
        console.log('caught: ' + err.message);
        batch.close();
        socket.close();
      });
      const client = dgram.createSocket('udp4');
      client.send('x', socket.address().port, '127.0.0.1', () => client.close());
    });
  `;
  const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
  t.is(result.stdout.trim(), 'caught: thrown in the batch', result.stderr);
  t.is(result.status, 0, result.stderr);
});
