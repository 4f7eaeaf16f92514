/**
 * The TCP relay's batched reads on their own (src/platform/tcp-reads.ts over src/native/tcp_reads.c): reads land
 * in the slot's buffer and can be re-pointed, a pause holds data back until resumed, a payload of
 * several buffers is read in one loop turn, end of stream and a reset are reported once and take
 * the socket out of the epoll set (seen in /proc/self/fdinfo, not by timing), and a slot forgotten
 * during a batch gets none of that batch's reads and is not handed out again within it.
 * Loopback only; every slot is forgotten and every socket closed at teardown.
 */
import avaTest, { type ExecutionContext } from 'ava';
import { publicPathForced } from '../../../src/platform/index.js';
/** These look at Node's internals themselves: with PACKETPONY_PUBLIC_PATH=1 there are none to look at. */
const test = publicPathForced() ? Object.assign(avaTest.skip, { serial: avaTest.serial.skip }) : avaTest;

import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import type { NativeAddon } from '../../../src/native/addon.js';
import { batchedReads, batchedReadsUnavailable, openBatchedReads, tcpAddonAllowed, type BatchedReads, type ReadTarget } from '../../../src/platform/tcp-reads.js';
import { acceptedEnd } from '../../helpers/servers.js';
import { waitFor } from '../../helpers/wait-for.js';

const UV_EOF = -4095;
const ECONNRESET = 104;

function readsOrFail(): BatchedReads {
  const reads = batchedReads();
  if (reads === null) {
    throw new Error(`batched reads are not available: ${batchedReadsUnavailable() || 'no addon, or the addon not allowed (PACKETPONY_TCP_SEND_NOW=0)'}`);
  }
  return reads;
}

/** An accepted socket (its TcpEnd only lends the descriptor) and the client connected to it. */
async function socketPair(t: ExecutionContext): Promise<{ fd: number; peer: net.Socket }> {
  // The end is closed at teardown after the slot is forgotten (ava runs teardowns last-in first-out).
  const { end, peer } = await acceptedEnd(t);
  return { fd: end.descriptor, peer };
}

interface Recorder extends ReadTarget {
  readonly results: number[];
  text: string;
  buffer: Buffer;
  /** Called on each read, after it is recorded. */
  onRead: () => void;
}

function recorder(size: number): Recorder {
  const r: Recorder = {
    results: [],
    text: '',
    buffer: Buffer.alloc(size),
    onRead: () => {},
    readLanded(n) {
      r.results.push(n);
      r.text += r.buffer.toString('latin1', 0, n);
      r.onRead();
      return undefined;
    },
    readFailed(status) {
      r.results.push(status);
    },
  };
  return r;
}

function watched(t: ExecutionContext, reads: BatchedReads, target: Recorder, fd: number): number {
  const slot = reads.watch(target, fd, target.buffer);
  t.true(slot >= 0, `watch gave ${slot}`);
  t.teardown(() => reads.forget(slot));
  return slot;
}

/** How many epoll sets of this process hold `fd` (from /proc/self/fdinfo: one "tfd:" line per member). */
function epollSetsHolding(fd: number): number {
  let sets = 0;
  for (const name of readdirSync('/proc/self/fd')) {
    let link = '';
    try {
      link = readlinkSync(`/proc/self/fd/${name}`);
    } catch {
      continue; // closed meanwhile
    }
    if (link !== 'anon_inode:[eventpoll]') continue;
    const info = readFileSync(`/proc/self/fdinfo/${name}`, 'latin1');
    if (new RegExp(`^tfd:\\s+${fd}\\s`, 'm').test(info)) sets++;
  }
  return sets;
}

/** Resolves once the peer's write has been handed to the kernel (on loopback: in our receive queue). */
function written(peer: net.Socket, data: string | Buffer): Promise<void> {
  return new Promise((resolve, reject) => peer.write(data, (err) => (err ? reject(err) : resolve())));
}

test('batched reads are used wherever the addon is built, unless PACKETPONY_TCP_SEND_NOW=0', (t) => {
  // The switch as this process was given it (test/helpers/libuv-tcp-writes.ts turns it off).
  const wanted = tcpAddonAllowed() && process.platform === 'linux';
  t.is(batchedReads() !== null, wanted, batchedReadsUnavailable());
});

test('reads land in the slot buffer, and readInto re-points the next ones', async (t) => {
  const reads = readsOrFail();
  const { fd, peer } = await socketPair(t);
  const target = recorder(64);
  const slot = watched(t, reads, target, fd);
  t.is(epollSetsHolding(fd), 1, 'in the set while reading');
  peer.write('first');
  await waitFor(() => target.text === 'first', 'the first read');
  t.deepEqual(target.results, [5]);
  const other = Buffer.alloc(16);
  reads.readInto(slot, other);
  target.buffer = other;
  peer.write('second');
  await waitFor(() => target.text === 'firstsecond', 'the second read, into the other buffer');
  t.is(other.toString('latin1', 0, 6), 'second');
});

test('pause holds data back; resume delivers it; a paused socket that turns readable leaves the set', async (t) => {
  const reads = readsOrFail();
  const { fd, peer } = await socketPair(t);
  const target = recorder(64);
  const slot = watched(t, reads, target, fd);
  reads.pause(slot);
  t.is(epollSetsHolding(fd), 1, 'pausing alone makes no system call');
  await written(peer, 'held');
  await waitFor(() => epollSetsHolding(fd) === 0, 'the socket to leave the set once readable while paused');
  t.deepEqual(target.results, [], 'nothing read while paused');
  t.is(reads.resume(slot, fd), 0);
  t.is(epollSetsHolding(fd), 1, 'back in the set');
  await waitFor(() => target.text === 'held', 'the held data after resume');
});

test('a payload of several buffers already queued is read within one loop turn', async (t) => {
  const reads = readsOrFail();
  const { fd, peer } = await socketPair(t);
  const target = recorder(1024);
  const payload = Buffer.alloc(3 * 1024 + 100, 'x');
  await written(peer, payload);
  let turnEnded = false;
  let readBeforeTurnEnded = -1;
  target.onRead = () => {
    if (target.results.length === 1) {
      setImmediate(() => {
        turnEnded = true;
        readBeforeTurnEnded = target.text.length;
      });
    }
  };
  watched(t, reads, target, fd);
  await waitFor(() => turnEnded, 'the turn of the first read to end');
  t.is(readBeforeTurnEnded, payload.length, 'every buffer-full read again in the same turn');
  t.deepEqual(target.results, [1024, 1024, 1024, 100]);
});

test('end of stream is reported once, and the socket leaves the set at once', async (t) => {
  const reads = readsOrFail();
  const { fd, peer } = await socketPair(t);
  const target = recorder(64);
  watched(t, reads, target, fd);
  peer.end('last words');
  await waitFor(() => target.results.includes(UV_EOF), 'the end of stream');
  t.is(target.text, 'last words');
  t.is(epollSetsHolding(fd), 0, 'out of the set: a level-triggered end of stream would wake every turn');
  t.is(target.results.filter((r) => r === UV_EOF).length, 1);
});

test('a reset is reported as ECONNRESET and the socket leaves the set', async (t) => {
  const reads = readsOrFail();
  const { fd, peer } = await socketPair(t);
  const target = recorder(64);
  watched(t, reads, target, fd);
  peer.resetAndDestroy();
  await waitFor(() => target.results.length > 0, 'the reset');
  t.deepEqual(target.results, [-ECONNRESET]);
  t.is(epollSetsHolding(fd), 0);
});

test('a slot forgotten during a batch gets none of its reads, and is not handed out again within it', async (t) => {
  const reads = readsOrFail();
  const a = await socketPair(t);
  const b = await socketPair(t);
  await Promise.all([written(a.peer, 'to a'), written(b.peer, 'to b')]);
  const first = recorder(64);
  const second = recorder(64);
  const third = recorder(64);
  const slots: number[] = [];
  let newSlot = -1;
  // Whichever is handled first forgets the other and watches a third socket in its place.
  const c = await socketPair(t);
  const forgetOther = (self: number) => () => {
    if (newSlot !== -1) return;
    reads.forget(slots[1 - self]!);
    newSlot = reads.watch(third, c.fd, third.buffer);
  };
  first.onRead = forgetOther(0);
  second.onRead = forgetOther(1);
  slots.push(reads.watch(first, a.fd, first.buffer), reads.watch(second, b.fd, second.buffer));
  t.teardown(() => {
    for (const slot of [...slots, newSlot]) {
      if (slot >= 0) reads.forget(slot);
    }
  });
  await waitFor(() => newSlot !== -1, 'the first read of the batch');
  t.is(first.results.length + second.results.length, 1, 'the forgotten slot got no read');
  t.false(slots.includes(newSlot), 'the forgotten slot was not reused within the batch');
  // Forgotten for good: keep the teardown from forgetting it twice.
  const forgotten = first.results.length === 0 ? 0 : 1;
  slots[forgotten] = -1;
  c.peer.write('to c');
  await waitFor(() => third.text === 'to c', 'the new slot reads');
});

// Serial: it counts the slots in use, which the other tests of this file take too.
test.serial('a TcpEnd reads through a slot, and gives it back when it closes or is reset: its socket is in no epoll set after', async (t) => {
  const reads = readsOrFail();
  const before = reads.watching;
  for (const how of ['close', 'reset'] as const) {
    const { end, peer } = await acceptedEnd(t);
    const target = recorder(64);
    let closed = false;
    end.onClose = () => (closed = true);
    end.setSink({ nextBuffer: () => target.buffer, onStaticRead: (n) => (target.readLanded(n), true) });
    t.is(end.startReading(), null);
    const fd = end.descriptor;
    t.is(reads.watching, before + 1, `${how}: a slot while reading`);
    t.is(epollSetsHolding(fd), 1, `${how}: in the set while reading`);
    peer.write('hello');
    await waitFor(() => target.text === 'hello', `${how}: the read through the slot`);
    if (how === 'close') end.close();
    else end.reset();
    t.is(reads.watching, before, `${how}: the slot is given back at once`);
    await waitFor(() => closed, `${how}: the close callback`);
    t.is(epollSetsHolding(fd), 0, `${how}: the close took the socket out of the set`);
  }
});

test('an epoll set that cannot be made gives its reason instead of throwing (batchedReads then keeps the process on Node reads)', (t) => {
  const failing = {
    tcpReadsOpen() {
      throw new Error('Too many open files');
    },
  } as unknown as NativeAddon;
  t.is(openBatchedReads(failing), 'Too many open files');
});
