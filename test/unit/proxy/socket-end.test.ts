/**
 * SocketEnd and SocketWriter (socket-end.ts), the relay's ends over net.Socket, on whatever path
 * this process relays: reads no larger than the sink's buffer, a read stopped in the middle of
 * Node's chunk keeps the rest (and the end of stream behind it) for the next start, writes report
 * a pending write and its completion, and a reset reaches the peer. The relay's own tests run on
 * these ends too, with PACKETPONY_PUBLIC_PATH=1.
 */
import test from 'ava';
import { SocketEnd, socketEnds } from '../../../src/proxy/socket-end.js';
import { WRITE_DONE, WRITE_PENDING, type ReadSink } from '../../../src/platform/tcp-end.js';
import { acceptedEnd, refusingPort } from '../../helpers/servers.js';
import { waitFor } from '../../helpers/wait-for.js';

const accepted = (t: Parameters<typeof acceptedEnd>[0]) => acceptedEnd<SocketEnd>(t, socketEnds);

/** A sink of `size`-byte reads that stops after each `stopEvery` reads (0: never). */
function sink(size: number, stopEvery = 0): ReadSink & { readonly reads: number[]; text: string } {
  const buffer = Buffer.alloc(size);
  let given = false;
  const state = {
    reads: [] as number[],
    text: '',
    nextBuffer: () => (given ? null : ((given = true), buffer)),
    onStaticRead: (n: number) => {
      state.reads.push(n);
      state.text += buffer.toString('latin1', 0, n);
      return stopEvery === 0 || state.reads.length % stopEvery !== 0;
    },
  };
  return state;
}

test('reads are cut to the sink buffer; a stop in the middle of a chunk keeps the rest and the end of stream behind it', async (t) => {
  const { end, peer } = await accepted(t);
  const reader = sink(4, 1);
  let ended = false;
  end.onEnd = () => (ended = true);
  end.setSink(reader);
  peer.end('abcdefghij');
  t.is(end.startReading(), null);
  await waitFor(() => reader.reads.length === 1, 'the first read');
  t.false(end.reading, 'the sink stopped it');
  // Each start gives one more read of at most 4 bytes; the FIN comes only after the last byte.
  for (const expected of [2, 3]) {
    t.false(ended, 'the end of stream waits behind the held bytes');
    end.startReading();
    await waitFor(() => reader.reads.length === expected, `read ${expected}`);
  }
  await waitFor(() => ended, 'the end of stream');
  t.deepEqual(reader.reads, [4, 4, 2]);
  t.is(reader.text, 'abcdefghij');
  t.true(end.readableEnded);
});

test('a write the kernel takes is done at once; end() sends our FIN after it; both halves ended close the end', async (t) => {
  const { end, peer } = await accepted(t);
  const writer = socketEnds.writer(() => t.fail('no write was pending'));
  let closed = false;
  end.onClose = () => (closed = true);
  const got = new Promise<string>((resolve) => {
    let text = '';
    peer.on('data', (c: Buffer) => (text += c.toString()));
    peer.on('end', () => resolve(text));
  });
  t.is(writer.write(end, Buffer.from('hello, world'), 5), WRITE_DONE);
  t.true(writer.idle);
  end.end();
  t.is(await got, 'hello');
  end.setSink(sink(16));
  end.startReading();
  peer.end();
  await waitFor(() => closed, 'the end to close itself');
  t.true(end.writableFinished && end.readableEnded);
});

test('a write the peer does not take is pending until it drains, then completes', async (t) => {
  const { end, peer } = await accepted(t);
  peer.pause();
  const statuses: number[] = [];
  const writer = socketEnds.writer((status) => statuses.push(status));
  const chunk = Buffer.alloc(1024 * 1024, 'x');
  let result = WRITE_DONE;
  for (let i = 0; i < 64 && result === WRITE_DONE; i++) result = writer.write(end, chunk);
  t.is(result, WRITE_PENDING, 'a peer that stops reading leaves a write pending');
  t.false(writer.idle);
  t.true(end.pendingWriteBytes > 0);
  peer.resume();
  await waitFor(() => statuses.length === 1, 'the completion');
  t.deepEqual(statuses, [0]);
  t.true(writer.idle);
});

test('reset(): the peer sees ECONNRESET, and the end closes', async (t) => {
  const { end, peer } = await accepted(t);
  const error = new Promise<string>((resolve) => {
    peer.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? ''));
    peer.on('end', () => resolve('FIN'));
  });
  let closed = false;
  end.onClose = () => (closed = true);
  end.reset();
  t.is(await error, 'ECONNRESET');
  await waitFor(() => closed, 'the close');
});

test('wasReset(): a FIN is an end of stream; a reset right behind data is told apart', async (t) => {
  for (const how of ['FIN', 'reset'] as const) {
    const { end, peer } = await accepted(t);
    const seen = new Promise<string>((resolve) => {
      end.onEnd = () => resolve('end');
      end.onError = (err) => resolve(err.code ?? 'error');
    });
    end.setSink(sink(64));
    end.startReading();
    await new Promise<void>((resolve) => peer.write('data, then the end', () => resolve()));
    if (how === 'FIN') peer.end();
    else peer.resetAndDestroy();
    const outcome = await seen;
    if (how === 'FIN') {
      t.is(outcome, 'end');
      t.false(end.wasReset());
    } else if (outcome === 'end') {
      // libuv reported the reset as an end of stream (a partial read with POLLHUP): told apart.
      t.true(end.wasReset());
    } else {
      t.is(outcome, 'ECONNRESET', 'reported as the read error it is');
    }
  }
});

test('a dial to a port that refuses: an error with net.Socket\'s code, syscall and message', async (t) => {
  const port = await refusingPort(t);
  const end = SocketEnd.dial('127.0.0.1', port, 4);
  const err = await new Promise<NodeJS.ErrnoException>((resolve) => (end.onError = resolve));
  t.is(err.code, 'ECONNREFUSED');
  t.is(err.syscall, 'connect');
  t.is(err.message, `connect ECONNREFUSED 127.0.0.1:${port}`);
  end.close();
});
