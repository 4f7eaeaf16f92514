/**
 * TcpEnd and HandleWriter (tcp-handle.ts), the TCP relay's ends on Node's native handles: the
 * internals are there on the Node this project runs on, reads land in the reader's buffer, writes
 * keep their order with end(), a pending write is reported and completes, a dial's failure is an
 * error like net.Socket's, a half-open end closes itself once both halves are done, and a reset
 * closes the connection even while a shutdown is in progress.
 */
import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import { HandleWriter, TcpEnd, WRITE_DONE, WRITE_PENDING, nativeBindings, type ReadSink } from '../../../src/proxy/tcp-handle.js';
import { listen, listenEnds } from '../../helpers/servers.js';
import { waitFor } from '../../helpers/wait-for.js';

/** A TcpEnd accepted from a net.Socket client connected to it. */
async function accepted(t: ExecutionContext): Promise<{ end: TcpEnd; peer: net.Socket }> {
  let take!: (end: TcpEnd) => void;
  const got = new Promise<TcpEnd>((resolve) => (take = resolve));
  const port = await listenEnds(t, (end) => take(end));
  const peer = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  peer.on('error', () => {});
  t.teardown(() => void peer.destroy());
  const end = await got;
  t.teardown(() => end.close());
  return { end, peer };
}

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

test('a dial to a closed port fails like net.Socket: ECONNREFUSED, syscall connect, then close', async (t) => {
  // A port that was just free: nothing listens there.
  const server = net.createServer();
  const port = await listen(t, server);
  await new Promise<void>((resolve) => server.close(() => resolve()));
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
