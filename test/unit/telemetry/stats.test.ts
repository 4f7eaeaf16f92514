import test from 'ava';
import { ListenerStats } from '../../../src/telemetry/stats.js';

test('undelivered bytes come off the next delta; what the delta cannot cover is owed to the ones after', (t) => {
  const stats = new ListenerStats();
  stats.bytesReceived += 1000;
  stats.undelivered(0, 300);
  t.is(stats.takeDelta().bytes_received, 700);

  // Already reported: the counter cannot go down, so the next deltas pay it back.
  stats.undelivered(50, 500);
  t.false(stats.dirty, 'a debt alone is nothing to report');
  const owed = stats.takeDelta();
  t.is(owed.bytes_received, 0);
  t.is(owed.bytes_sent, 0);
  stats.bytesReceived += 200;
  stats.bytesSent += 40;
  t.false(stats.dirty, 'still in debt');
  stats.bytesReceived += 400;
  stats.bytesSent += 40;
  t.true(stats.dirty);
  const paid = stats.takeDelta();
  t.is(paid.bytes_received, 100, '600 relayed, 500 of them owed');
  t.is(paid.bytes_sent, 30);
  t.is(stats.takeDelta().bytes_received, 0, 'the debt is settled once');
});
