/**
 * The UDP relay's handle-level fast path: on the Node this project runs on, it must be available
 * (a Node upgrade that silently fell back to the dgram API would only show as a slower benchmark),
 * it must deliver and send whole datagrams both ways, and a closed socket must drop, not throw.
 */
import avaTest from 'ava';
import { publicPathForced } from '../../../src/platform/index.js';
/** These look at Node's internals themselves: with PACKETPONY_PUBLIC_PATH=1 there are none to look at. */
const test = publicPathForced() ? avaTest.skip : avaTest;

import dgram from 'node:dgram';
import { datagramSender, interceptDatagrams } from '../../../src/platform/index.js';
import { waitFor } from '../../helpers/wait-for.js';

async function bound(t: import('ava').ExecutionContext): Promise<dgram.Socket> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  t.teardown(() => {
    try {
      socket.close();
    } catch {
      // closed by the test
    }
  });
  return socket;
}

test('datagrams are received from the handle and sent on it, connected or not', async (t) => {
  const a = await bound(t);
  const b = await bound(t);
  const got: string[] = [];
  let from = 0;
  const undo = interceptDatagrams(a, (buf, rinfo) => {
    got.push(buf.toString());
    from = rinfo.port;
  });
  t.not(undo, null, 'the fast path is available on this Node');
  const toA = datagramSender(b);
  t.not(toA, null);
  toA!.sendTo(Buffer.from('one'), a.address().port, '127.0.0.1');
  toA!.sendTo(Buffer.alloc(0), a.address().port, '127.0.0.1');
  await waitFor(() => (got.length === 2 ? true : undefined), 'two datagrams');
  t.deepEqual(got, ['one', '']);
  t.is(from, b.address().port);

  // Connected, with a header sent in the same datagram.
  const c = dgram.createSocket('udp4');
  t.teardown(() => c.close());
  await new Promise<void>((resolve) => c.connect(a.address().port, '127.0.0.1', resolve));
  datagramSender(c)!.send(Buffer.from('body'), Buffer.from('head:'));
  await waitFor(() => (got.length === 3 ? true : undefined), 'the connected datagram');
  t.is(got[2], 'head:body');

  // Undone: 'message' events again.
  undo!();
  const viaEvent = new Promise<string>((resolve) => a.once('message', (msg) => resolve(msg.toString())));
  toA!.sendTo(Buffer.from('two'), a.address().port, '127.0.0.1');
  t.is(await viaEvent, 'two');
});

test('a closed socket drops what is sent on it instead of throwing', async (t) => {
  const socket = await bound(t);
  const sender = datagramSender(socket)!;
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  t.notThrows(() => sender.sendTo(Buffer.from('late'), 9, '127.0.0.1'));
});
