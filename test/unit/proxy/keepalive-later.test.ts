/**
 * keepalive-later.ts: keepalive is set on the dialled ends still open a second on, and on no end
 * that closed before; a closed TcpEnd holds nothing of its owner.
 */
import test from 'ava';
import { setKeepAliveLater } from '../../../src/proxy/keepalive-later.js';
import type { TcpEnd } from '../../../src/platform/tcp-end.js';
import { waitFor } from '../../helpers/wait-for.js';

function fakeEnd(): TcpEnd & { readonly set: number[] } {
  const set: number[] = [];
  return { destroyed: false, set, setKeepAlive: (ms: number) => void set.push(ms) } as unknown as TcpEnd & { readonly set: number[] };
}

test('open ends get keepalive with their own delay; an end closed meanwhile gets none', async (t) => {
  const open = fakeEnd();
  const other = fakeEnd();
  const closed = fakeEnd();
  setKeepAliveLater(open, 60_000);
  setKeepAliveLater(closed, 60_000);
  setKeepAliveLater(other, 5_000);
  t.deepEqual(open.set, [], 'not at once');
  (closed as { destroyed: boolean }).destroyed = true;
  await waitFor(() => open.set.length > 0 && other.set.length > 0, 'keepalive to be set');
  t.deepEqual(open.set, [60_000]);
  t.deepEqual(other.set, [5_000]);
  t.deepEqual(closed.set, []);
  // A second round arms the timer again.
  const late = fakeEnd();
  setKeepAliveLater(late, 1_000);
  await waitFor(() => late.set.length > 0, 'the second round');
  t.deepEqual(late.set, [1_000]);
  t.deepEqual(open.set, [60_000], 'each end once');
});
