/**
 * Shared limits in the policy (issue 24): the fleet's counts, as the store last told them, add to
 * this host's; what changed is collected for the store; the modes for a store that is down. Clock
 * injected; no store here (test/integration/shared-limits.test.ts has a real one).
 */
import test from 'ava';
import { limits, fakeClock, ticket } from './fixtures.js';
import { CONSUME_DROP, CONSUME_OK, RateLimiter } from '../../../src/policy/index.js';

const MINUTE = 60_000;
const A = '192.0.2.1';
const B = '192.0.2.2';

function shared(overrides: Parameters<typeof limits>[0], clock = fakeClock()) {
  return { clock, limiter: new RateLimiter(limits(overrides), clock.read, { shared: true }) };
}

test('attempts: the fleet\'s count in the window adds to this host\'s', (t) => {
  const { limiter } = shared({ max_connection_attempts_per_ip: 10, attempts_window: MINUTE });
  ticket(limiter.admit(A));
  limiter.applyPeers(A, 7, 0, 0);
  ticket(limiter.admit(A));
  ticket(limiter.admit(A));
  const refused = limiter.admit(A);
  t.false(refused.allow);
  t.is(refused.allow ? '' : refused.reason, 'attempt_limit', '4 here + 7 elsewhere > 10');
  t.true(limiter.admit(B).allow, 'another address has its own count');
});

test('open connections: the fleet\'s count adds to the cap', (t) => {
  const { limiter } = shared({ max_connections_per_ip: 3 });
  const first = ticket(limiter.admit(A));
  limiter.applyPeers(A, 0, 0, 2);
  const refused = limiter.admit(A);
  t.is(refused.allow ? '' : refused.reason, 'connection_limit');
  limiter.applyPeers(A, 0, 0, 1);
  t.true(limiter.admit(A).allow, 'one closed elsewhere: room again');
  limiter.release(first);
});

test('bandwidth: the fleet\'s bytes leave that much less of the cap', (t) => {
  const { limiter } = shared({ max_bandwidth_per_ip: 1000, bandwidth_window: MINUTE });
  const a = ticket(limiter.admit(A));
  limiter.applyPeers(A, 0, 600, 0);
  const meter = limiter.streamMeter(a);
  t.is(meter(400), CONSUME_OK);
  t.is(meter(1), CONSUME_DROP);
  t.is(limiter.consumeDatagram(a, 1), CONSUME_DROP);
  limiter.applyPeers(A, 0, 100, 0);
  t.is(meter(500), CONSUME_OK);
});

test('collectShared: what changed, once; then the rest as their windows slide; forgotten ones as zeros', (t) => {
  const { limiter, clock } = shared({ max_connection_attempts_per_ip: 10, attempts_window: MINUTE, max_connections_per_ip: 5 });
  const a = ticket(limiter.admit(A));
  ticket(limiter.admit(A));
  const b = ticket(limiter.admit(B));
  t.deepEqual(limiter.collectShared(100, -Infinity), [
    { address: A, attempts: 2, bytes: 0, open: 2 },
    { address: B, attempts: 1, bytes: 0, open: 1 },
  ]);
  t.deepEqual(limiter.collectShared(100, 0), [], 'nothing changed, nothing stale');
  limiter.release(b);
  t.deepEqual(limiter.collectShared(100, 0), [{ address: B, attempts: 1, bytes: 0, open: 0 }]);
  clock.now = 10_000;
  t.deepEqual(limiter.collectShared(100, 5_000).map((c) => c.address).sort(), [A, B], 'both not sent since 5 s: refreshed');
  t.deepEqual(limiter.collectShared(1, 20_000).length, 1, 'at most `max` per call');
  // B's window empties; the sweep forgets it, and the store must forget its count too.
  clock.now = 2 * MINUTE;
  limiter.collectShared(100, -Infinity);
  limiter.sweep();
  t.is(limiter.trackedAddresses, 1, 'A stays: it has a connection open');
  t.deepEqual(limiter.collectShared(100, Infinity).find((c) => c.address === B), { address: B, attempts: 0, bytes: 0, open: 0 });
  limiter.release(a);
});

test('a store that is down: local ignores the fleet, open admits everything, closed refuses new connections', (t) => {
  const { limiter } = shared({ max_connections_per_ip: 1 });
  ticket(limiter.admit(A));
  limiter.applyPeers(B, 0, 0, 0);
  t.false(limiter.admit(A).allow, 'the cap holds here');
  ticket(limiter.admit(B));
  limiter.setSharedMode('open');
  t.true(limiter.admit(A).allow, 'open: admitted over the cap');
  limiter.setSharedMode('closed');
  const refused = limiter.admit('192.0.2.9');
  t.is(refused.allow ? '' : refused.reason, 'store_down');
  limiter.setSharedMode('local');
  limiter.applyPeers('192.0.2.9', 0, 0, 5);
  t.true(limiter.admit('192.0.2.9').allow, 'local: what the fleet said is ignored');
  limiter.setSharedMode('shared');
  limiter.applyPeers('192.0.2.10', 0, 0, 0);
  t.is(limiter.sharedMode, 'shared');
});

test('a limiter that is not shared collects nothing and hears no peers', (t) => {
  const limiter = new RateLimiter(limits({ max_connections_per_ip: 1 }), fakeClock().read);
  ticket(limiter.admit(A));
  t.deepEqual(limiter.collectShared(100, Infinity), []);
  limiter.applyPeers(B, 0, 0, 5);
  t.true(limiter.admit(B).allow);
});
