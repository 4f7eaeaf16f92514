/**
 * NativeTcpEnd and HandleWriter (src/platform/native-tcp-end.ts, handle-writer.ts), the TCP relay's ends on Node's native handles: the
 * internals are there on the Node this project runs on, reads land in the reader's buffer, writes
 * keep their order with end(), a pending write is reported and completes, a dial's failure is an
 * error like net.Socket's, a half-open end closes itself once both halves are done, and a reset
 * closes the connection even while a shutdown is in progress.
 */
import avaTest from 'ava';
import net from 'node:net';
import { HandleWriter } from '../../../src/platform/handle-writer.js';
import { NativeTcpEnd as TcpEnd } from '../../../src/platform/native-tcp-end.js';
import { nativeTcpEnds } from '../../../src/platform/native-tcp-path.js';
import { sendsNow } from '../../../src/platform/socket-calls.js';
import { WRITE_DONE, WRITE_PENDING } from '../../../src/platform/tcp-end.js';
import { publicPathForced } from '../../../src/platform/index.js';
import { tcpAddonAllowed } from '../../../src/platform/tcp-reads.js';
import { nativeBindings } from '../../../src/platform/tcp-wrap.js';
import type { ReadSink } from '../../../src/platform/tcp-end.js';
import { acceptedEnd, listen, refusingPort } from '../../helpers/servers.js';
import { waitFor } from '../../helpers/wait-for.js';

/** Native ends even where the process relays on net.Socket; skipped when the switch rules them out. */
const test = publicPathForced() ? avaTest.skip : avaTest;
const accepted = (t: Parameters<typeof acceptedEnd>[0]) => acceptedEnd<TcpEnd>(t, nativeTcpEnds);

/** Collects what is read into `buffer` (one buffer, kept). */
function collector(size = 1024): ReadSink & { readonly text: () => string } {
  const buffer = Buffer.alloc(size);
  let text = '';
  let given = false;
  return {
    nextBuffer: () => (given ? null : ((given = true), buffer)),
    onStaticRead: (n) => {
      text += buffer.toString('latin1', 0, n);
      return true;
    },
    text: () => text,
  };
}

function readAll(socket: net.Socket): Promise<string> {
  let text = '';
  socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
  return new Promise((resolve) => socket.once('end', () => resolve(text)));
}

test('the native bindings are there (a Node upgrade that moves them fails here first)', (t) => {
  t.notThrows(() => nativeBindings());
});

test('reads land in the sink; end of stream and a FIN of ours close the end by itself', async (t) => {
  const { end, peer } = await accepted(t);
  const sink = collector();
  let ended = false;
  let closed = false;
  end.onEnd = () => (ended = true);
  end.onClose = () => (closed = true);
  end.setSink(sink);
  t.is(end.startReading(), null);
  peer.end('hello');
  await waitFor(() => ended, 'end of stream');
  t.is(sink.text(), 'hello');
  t.false(end.wasReset(), 'a FIN is no reset');
  t.false(closed, 'half-open: our side may still write');
  const received = readAll(peer);
  const writer = new HandleWriter(() => {});
  t.is(writer.write(end, Buffer.from('bye')), WRITE_DONE);
  end.end();
  t.is(await received, 'bye');
  await waitFor(() => closed, 'the end to close itself');
  t.true(end.readableEnded && end.writableFinished);
});

test('writes keep their order with end()', async (t) => {
  const { end, peer } = await accepted(t);
  const received = readAll(peer);
  const writer = new HandleWriter(() => {});
  t.is(writer.write(end, Buffer.from('header|')), WRITE_DONE);
  writer.write(end, Buffer.from('one|'));
  writer.write(end, Buffer.from('two'));
  end.end();
  t.is(await received, 'header|one|two');
});

test('a write the peer does not take stays pending, then completes', async (t) => {
  const { end, peer } = await accepted(t);
  peer.pause();
  const statuses: number[] = [];
  const writer = new HandleWriter((status) => statuses.push(status));
  const chunk = Buffer.alloc(1024 * 1024, 7);
  let result = WRITE_DONE;
  let written = 0;
  for (let i = 0; i < 64 && result === WRITE_DONE; i++) {
    result = writer.write(end, chunk);
    written += chunk.length;
  }
  t.is(result, WRITE_PENDING);
  t.true(end.pendingWriteBytes > 0);
  let got = 0;
  peer.on('data', (c: Buffer) => (got += c.length));
  peer.resume();
  await waitFor(() => statuses.length === 1, 'the pending write to complete');
  t.deepEqual(statuses, [0]);
  await waitFor(() => got === written, 'every byte at the peer');
  t.is(end.pendingWriteBytes, 0);
});

test('write(end, buffer, length) writes only the first `length` bytes', async (t) => {
  const { end, peer } = await accepted(t);
  const received = readAll(peer);
  const writer = new HandleWriter(() => {});
  const buffer = Buffer.from('abcdefgh');
  t.is(writer.write(end, buffer, 3), WRITE_DONE);
  t.is(writer.write(end, buffer.subarray(3), 2), WRITE_DONE);
  end.end();
  t.is(await received, 'abcde');
});

test('order holds across a pending write: nothing is sent past what libuv still holds', async (t) => {
  // The chunks are numbered bytes; the peer reads nothing until the writer has a write pending,
  // then checks every byte came in order. With the addon, a chunk written while a pending one is
  // still queued must go behind it through libuv, never straight to the socket.
  const { end, peer } = await accepted(t);
  peer.pause();
  let completed = 0;
  const writer = new HandleWriter(() => completed++);
  // Byte n of the stream is n mod 251 (a prime: no chunk or read boundary lines up with it).
  const chunkSize = 256 * 1024;
  let next = 0;
  const chunk = (): Buffer => {
    const c = Buffer.allocUnsafe(chunkSize);
    for (let i = 0; i < chunkSize; i++) c[i] = (next + i) % 251;
    next += chunkSize;
    return c;
  };
  let pending = 0;
  for (let i = 0; i < 256 && pending === 0; i++) if (writer.write(end, chunk()) === WRITE_PENDING) pending++;
  t.is(pending, 1, 'the socket filled up');
  // Once the peer has read some (so the socket has room) but before libuv writes out its queue,
  // another chunk is written: it must go behind the queued one. (The relay never writes while a
  // write is pending, but for the PROXY header's; this is the writer's own guarantee.)
  const total = next + chunkSize;
  let second = -1;
  let got = 0;
  let inOrder = true;
  peer.on('data', (c: Buffer) => {
    for (let i = 0; i < c.length; i++) if (c[i] !== (got + i) % 251) inOrder = false;
    got += c.length;
    if (second === -1) second = writer.write(end, chunk());
  });
  peer.resume();
  await waitFor(() => got === total, 'every byte at the peer');
  t.is(second, WRITE_PENDING, 'queued behind the pending write');
  t.true(inOrder, 'every byte in order');
  await waitFor(() => completed === 2, 'both pending writes to complete');
  // Once libuv's queue is empty again, writes go out at once.
  t.is(writer.write(end, Buffer.from('after')), WRITE_DONE);
});

test('sendNow: used wherever the addon is built, unless PACKETPONY_TCP_SEND_NOW=0', (t) => {
  // The switch as this process was given it (test/helpers/libuv-tcp-writes.ts turns it off).
  const wanted = tcpAddonAllowed() && process.platform === 'linux';
  t.is(sendsNow(), wanted);
});

test('a closed end forgets its owner: no callback of the owner is held once the close is reported', async (t) => {
  const { end } = await accepted(t);
  const owner = () => {};
  end.onEnd = owner;
  end.onError = owner;
  end.onConnect = owner;
  let closed = 0;
  end.onClose = () => closed++;
  end.close();
  await waitFor(() => closed === 1, 'the close callback');
  t.not(end.onEnd, owner);
  t.not(end.onError, owner);
  t.not(end.onConnect, owner);
  end.onClose();
  t.is(closed, 1, 'onClose was dropped too');
});

test('end(true) with nothing queued: the FIN goes at once through the addon, behind the data, and the end closes itself', async (t) => {
  const { end, peer } = await accepted(t);
  const text = readAll(peer);
  let closed = false;
  end.onClose = () => (closed = true);
  end.setSink(collector());
  end.startReading();
  const writer = new HandleWriter(() => {});
  t.is(writer.write(end, Buffer.from('all of it')), WRITE_DONE);
  t.true(writer.idle);
  end.end(true);
  // Straight to the socket where the addon is there; through libuv's request (a later turn) otherwise.
  t.is(end.writableFinished, sendsNow());
  t.is(await text, 'all of it');
  peer.end();
  await waitFor(() => closed, 'the end to close once both halves are done');
  t.true(end.writableFinished);
});

test('end(true) once the peer\'s FIN was read: the close sends our FIN (behind the data), never a reset', async (t) => {
  const { end, peer } = await accepted(t);
  const text = readAll(peer);
  let peerError = '';
  peer.on('error', (err: NodeJS.ErrnoException) => (peerError = err.code ?? err.message));
  let closed = false;
  end.onClose = () => (closed = true);
  end.setSink(collector());
  end.startReading();
  peer.end();
  await waitFor(() => end.readableEnded, 'the peer\'s FIN');
  t.is(new HandleWriter(() => {}).write(end, Buffer.from('the answer')), WRITE_DONE);
  end.end(true);
  t.is(await text, 'the answer');
  await waitFor(() => closed, 'the end to close');
  t.is(peerError, '');
});

test('end(true) after the peer reset: counted as done, and the reset is still reported by the read', async (t) => {
  const { end, peer } = await accepted(t);
  let outcome = '';
  end.onEnd = () => (outcome = end.wasReset() ? 'reset' : 'FIN');
  end.onError = (err) => (outcome = err.code ?? err.message);
  end.setSink(collector());
  peer.resetAndDestroy();
  // Wait until the kernel has the reset (getpeername fails then) before shutting down.
  await waitFor(() => end.remote() === null, 'the reset to arrive');
  end.end(true);
  t.true(end.writableEnded);
  end.startReading();
  await waitFor(() => outcome !== '', 'the read to report the reset');
  t.not(outcome, 'FIN');
});

test('descriptor: the socket\'s number while open, -1 once closed (never a number the kernel may reuse)', async (t) => {
  const { end } = await accepted(t);
  t.true(end.descriptor >= 0);
  t.is(end.descriptor, (end as TcpEnd).fd);
  end.close();
  t.is(end.descriptor, -1);
  t.is(new HandleWriter(() => {}).write(end, Buffer.from('x')), -9, 'EBADF: nothing is written to a closed end');
});

test('a dial to a closed port fails like net.Socket: ECONNREFUSED, syscall connect, then close', async (t) => {
  // A port bound but not listening, for the test's whole length: a port merely freed could be
  // taken meanwhile by another test file's listener, and the dial would then succeed.
  const port = await refusingPort(t);
  const end = TcpEnd.dial('127.0.0.1', port, 4);
  let connected = false;
  let error: NodeJS.ErrnoException | undefined;
  end.onConnect = () => (connected = true);
  end.onError = (err) => (error = err);
  await waitFor(() => error !== undefined, 'the dial to fail');
  t.false(connected);
  t.is(error!.code, 'ECONNREFUSED');
  t.is(error!.syscall, 'connect');
  t.is(error!.message, `connect ECONNREFUSED 127.0.0.1:${port}`);
  let closed = false;
  end.onClose = () => (closed = true);
  end.close();
  await waitFor(() => closed, 'the close callback');
});

test('a dial that succeeds reports onConnect and reads what the peer sends', async (t) => {
  let peer!: net.Socket;
  const server = net.createServer((socket) => {
    peer = socket;
    socket.end('welcome');
  });
  const port = await listen(t, server);
  const end = TcpEnd.dial('127.0.0.1', port, 4);
  t.teardown(() => end.close());
  const sink = collector();
  end.setSink(sink);
  let ended = false;
  end.onEnd = () => (ended = true);
  end.onConnect = () => void end.startReading();
  await waitFor(() => ended, 'the peer to send and end');
  t.is(sink.text(), 'welcome');
  t.truthy(peer);
  t.is(end.remote()?.port, port);
});

test('a reset right after end(), while the shutdown is in progress, still closes the connection', async (t) => {
  const { end, peer } = await accepted(t);
  peer.resume();
  let peerClosed = false;
  peer.on('close', () => (peerClosed = true));
  let closed = false;
  const errors: string[] = [];
  end.onClose = () => (closed = true);
  end.onError = (err) => errors.push(err.message);
  new HandleWriter(() => {}).write(end, Buffer.from('last words'));
  end.end();
  t.true(end.writableEnded);
  end.reset();
  await waitFor(() => closed, 'the close callback');
  t.deepEqual(errors, []);
  // The peer read our FIN and reads no more; writing shows whether anything is left at our end (a
  // descriptor leaked open would take the data without complaint).
  await waitFor(() => {
    if (!peer.destroyed) peer.write('anyone there?');
    return peerClosed;
  }, 'the peer to find the connection gone');
  t.pass();
});

test('a reset with nothing pending sends a RST at once', async (t) => {
  const { end, peer } = await accepted(t);
  const seen = new Promise<string>((resolve) => {
    peer.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    peer.on('end', () => resolve('end'));
  });
  end.reset();
  t.is(await seen, 'ECONNRESET');
});

test('a reset from the peer is a read error, or an end of stream that wasReset() sees through', async (t) => {
  const { end, peer } = await accepted(t);
  const sink = collector();
  end.setSink(sink);
  let outcome = '';
  end.onEnd = () => (outcome = end.wasReset() ? 'reset (seen at end of stream)' : 'FIN');
  end.onError = (err) => (outcome = err.code ?? err.message);
  end.startReading();
  peer.write('x');
  peer.resetAndDestroy();
  await waitFor(() => outcome !== '', 'the reset to arrive');
  t.not(outcome, 'FIN');
});

test('wasReset(): false after a FIN from the peer, true once the peer reset the connection', async (t) => {
  const fin = await accepted(t);
  fin.end.setSink(collector());
  fin.end.startReading();
  fin.peer.end();
  await waitFor(() => fin.end.readableEnded, 'the FIN');
  t.false(fin.end.wasReset());
  const reset = await accepted(t);
  reset.peer.resetAndDestroy();
  await waitFor(() => reset.end.wasReset(), 'the reset to be seen');
  t.true(reset.end.wasReset());
  t.is(reset.end.remote(), null, 'Node\'s getpeername agrees');
});

test('a reset while a shutdown waits behind writes the peer does not take still closes the connection', async (t) => {
  const { end, peer } = await accepted(t);
  peer.pause();
  const writer = new HandleWriter(() => {});
  const chunk = Buffer.alloc(1024 * 1024, 7);
  let result = WRITE_DONE;
  for (let i = 0; i < 64 && result === WRITE_DONE; i++) result = writer.write(end, chunk);
  t.is(result, WRITE_PENDING, 'a write is queued');
  end.end(); // the shutdown waits behind the queued write, which waits for the peer
  let closed = false;
  end.onClose = () => (closed = true);
  end.reset();
  await waitFor(() => closed, 'the close callback');
  t.true(end.closed);
});
