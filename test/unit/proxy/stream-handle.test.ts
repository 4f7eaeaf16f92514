/**
 * resetSocket(): a reset must close the socket even in the window where its write side is being
 * shut down (Node 20 + libuv would otherwise drop the handle without closing it).
 */
import test from 'ava';
import net from 'node:net';
import { resetSocket } from '../../../src/proxy/stream-handle.js';
import { waitFor } from '../../helpers/wait-for.js';

async function connectedPair(t: import('ava').ExecutionContext): Promise<{ ours: net.Socket; peer: Promise<net.Socket> }> {
  let accepted!: (socket: net.Socket) => void;
  const peer = new Promise<net.Socket>((resolve) => (accepted = resolve));
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {});
    socket.resume();
    accepted(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => void server.close());
  const ours = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  t.teardown(() => void ours.destroy());
  await new Promise<void>((resolve) => ours.once('connect', () => resolve()));
  return { ours, peer };
}

test('a reset right after end(), while the shutdown is pending, still closes the socket', async (t) => {
  const { ours, peer } = await connectedPair(t);
  const errors: string[] = [];
  ours.on('error', (error: NodeJS.ErrnoException) => errors.push(`${error.syscall ?? ''} ${error.code ?? ''}`));
  let closed = false;
  ours.on('close', () => (closed = true));
  const peerSocket = await peer;
  let peerClosed = false;
  peerSocket.on('close', () => (peerClosed = true));
  ours.write('last words');
  await new Promise((resolve) => setTimeout(resolve, 20)); // let the write complete: nothing queued
  ours.end();
  // end() asks for the shutdown on the next tick; this runs right after, before libuv performs it.
  await new Promise<void>((resolve) => process.nextTick(() => process.nextTick(resolve)));
  resetSocket(ours);
  await waitFor(() => closed, "the socket's close event", 5000);
  t.deepEqual(errors, [], 'no "reset EINVAL" error');
  // The peer read our FIN and reads no more; writing shows whether anything is left at our end (a
  // descriptor leaked open would take the data without complaint).
  await waitFor(() => {
    if (!peerSocket.destroyed) peerSocket.write('anyone there?');
    return peerClosed;
  }, 'the peer to find the connection gone', 5000);
  t.pass();
});

test('a reset of a socket with nothing pending sends a RST at once', async (t) => {
  const { ours, peer } = await connectedPair(t);
  const peerSocket = await peer;
  const seen = new Promise<string>((resolve) => {
    peerSocket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    peerSocket.on('end', () => resolve('end'));
  });
  resetSocket(ours);
  t.is(await seen, 'ECONNRESET');
});
