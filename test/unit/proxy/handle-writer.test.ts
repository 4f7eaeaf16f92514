/**
 * HandleWriter (stream-handle.ts), the TCP relay's write path: available on the Node this project
 * runs on (a silent fallback would only show as a slower benchmark), in order with a write made
 * through the socket itself and with end(), and a pending write is reported as pending and then
 * completed once the peer reads.
 */
import test from 'ava';
import net from 'node:net';
import { HandleWriter, WRITE_DONE, WRITE_PENDING, pendingWriteBytes } from '../../../src/proxy/stream-handle.js';
import { waitFor } from '../../helpers/wait-for.js';

async function pair(t: import('ava').ExecutionContext): Promise<{ ours: net.Socket; peer: net.Socket }> {
  let accepted!: (socket: net.Socket) => void;
  const peer = new Promise<net.Socket>((resolve) => (accepted = resolve));
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => accepted(socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => void server.close());
  const ours = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  t.teardown(() => void ours.destroy());
  await new Promise<void>((resolve) => ours.once('connect', () => resolve()));
  const theirs = await peer;
  t.teardown(() => void theirs.destroy());
  return { ours, peer: theirs };
}

function readAll(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.resume();
  return new Promise((resolve) => socket.once('end', () => resolve(Buffer.concat(chunks))));
}

test('writes land in order with socket.write() and end()', async (t) => {
  const { ours, peer } = await pair(t);
  const writer = HandleWriter.create(() => {});
  t.not(writer, null, 'the direct write path is available on this Node');
  const received = readAll(peer);
  ours.write('header|');
  t.is(writer!.write(ours, Buffer.from('one|')), WRITE_DONE);
  writer!.write(ours, Buffer.from('two'));
  ours.end();
  t.is((await received).toString(), 'header|one|two');
});

test('a write the peer does not take stays pending, then completes', async (t) => {
  const { ours, peer } = await pair(t);
  const statuses: number[] = [];
  const writer = HandleWriter.create((status) => statuses.push(status))!;
  const chunk = Buffer.alloc(1024 * 1024, 7);
  let result = WRITE_DONE;
  let written = 0;
  // The peer is paused: the kernel's buffers fill, then a write has to wait.
  for (let i = 0; i < 64 && result === WRITE_DONE; i++) {
    result = writer.write(ours, chunk);
    written += chunk.length;
  }
  t.is(result, WRITE_PENDING);
  t.true(pendingWriteBytes(ours) > 0);
  let got = 0;
  peer.on('data', (c: Buffer) => (got += c.length));
  peer.resume();
  await waitFor(() => (statuses.length === 1 ? true : undefined), 'the pending write to complete');
  t.deepEqual(statuses, [0]);
  await waitFor(() => (got === written ? true : undefined), 'every byte at the peer');
  t.is(pendingWriteBytes(ours), 0);
});
