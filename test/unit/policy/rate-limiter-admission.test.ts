import test from 'ava';
import { OFF, limits, fakeClock, ticket } from './fixtures.js';
import { ListenerPolicy, RateLimiter, type AdmitVerdict } from '../../../src/policy/index.js';

function reason(verdict: AdmitVerdict): string {
  return verdict.allow ? 'allowed' : verdict.reason;
}

const A = '192.0.2.1';
const B = '192.0.2.2';

test('max_connections_per_ip caps concurrency and frees a slot the moment a connection closes', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter(limits({ max_connections_per_ip: 2 }), clock.read);
  const first = ticket(limiter.admit(A));
  ticket(limiter.admit(A));
  t.is(reason(limiter.admit(A)), 'connection_limit');
  limiter.release(first);
  // No window to wait for: the same instant, the slot is free again.
  ticket(limiter.admit(A));
  t.is(reason(limiter.admit(A)), 'connection_limit');
});

test('refused connections take no quota, and a double release frees one slot only', (t) => {
  const limiter = new RateLimiter(limits({ max_connections_per_ip: 2 }), fakeClock().read);
  const first = ticket(limiter.admit(A));
  const second = ticket(limiter.admit(A));
  for (let i = 0; i < 10; i++) t.false(limiter.admit(A).allow);
  limiter.release(first);
  limiter.release(first);
  ticket(limiter.admit(A));
  t.is(reason(limiter.admit(A)), 'connection_limit');
  limiter.release(second);
  t.is(limiter.openConnections, 1);
});

test('attempts are counted per window, refused ones included, so a hammering client stays blocked', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter(limits({ max_connection_attempts_per_ip: 3, attempts_window: 10_000 }), clock.read);
  for (let i = 0; i < 3; i++) limiter.release(ticket(limiter.admit(A)));
  t.is(reason(limiter.admit(A)), 'attempt_limit');
  // One attempt a second for a minute: each refused attempt keeps the window full.
  for (let i = 0; i < 60; i++) {
    clock.now += 1_000;
    t.is(reason(limiter.admit(A)), 'attempt_limit', `attempt at ${clock.now}`);
  }
  // Quiet for a window (plus the sub-bucket of slack): allowed again.
  clock.now += 10_000 + 500;
  ticket(limiter.admit(A));
});

test('attempts count every admit, connections only the open ones', (t) => {
  const limiter = new RateLimiter(
    limits({ max_connections_per_ip: 1, max_connection_attempts_per_ip: 5, attempts_window: 60_000 }),
    fakeClock().read,
  );
  const open = ticket(limiter.admit(A));
  for (let i = 0; i < 4; i++) t.is(reason(limiter.admit(A)), 'connection_limit');
  limiter.release(open);
  // The five attempts so far are spent even though four were refused.
  t.is(reason(limiter.admit(A)), 'attempt_limit');
});

test('the allowlist runs first: denied clients never reach the limiter and cost no quota', (t) => {
  const policy = ListenerPolicy.fromConfig(
    { allowlist: ['10.0.0.0/8'], rate_limits: limits({ max_connection_attempts_per_ip: 2, attempts_window: 60_000 }) },
    fakeClock().read,
  );
  for (let i = 0; i < 50; i++) t.deepEqual(policy.admit('192.0.2.9'), { allow: false, reason: 'acl' });
  t.is(policy.limiter.trackedAddresses, 0);
  // A dual-stack socket reports the IPv4 client mapped; it is admitted and keyed by its IPv4 form.
  const admitted = policy.admit('::ffff:10.1.2.3');
  t.true(admitted.allow);
  t.is(admitted.allow ? admitted.address : '', '10.1.2.3');
  t.true(policy.admit('10.1.2.3').allow);
  t.is(reason(policy.admit('10.1.2.3') as AdmitVerdict), 'attempt_limit');
});

test('max_total_connections caps the listener across addresses', (t) => {
  const limiter = new RateLimiter(limits({ max_total_connections: 2 }), fakeClock().read);
  const a = ticket(limiter.admit(A));
  ticket(limiter.admit(B));
  t.is(reason(limiter.admit('192.0.2.3')), 'total_limit');
  limiter.release(a);
  ticket(limiter.admit('192.0.2.3'));
  // No per-address limit: no per-address state either.
  t.is(limiter.trackedAddresses, 0);
});

test('addresses do not affect each other', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter(
    limits({ max_connections_per_ip: 1, max_connection_attempts_per_ip: 3, attempts_window: 60_000, max_bandwidth_per_ip: 100, bandwidth_window: 60_000 }),
    clock.read,
  );
  const a = ticket(limiter.admit(A));
  limiter.consume(a, 100);
  t.is(reason(limiter.admit(A)), 'connection_limit');
  t.is(reason(limiter.admit(A)), 'connection_limit');
  t.is(reason(limiter.admit(A)), 'attempt_limit');
  const b = ticket(limiter.admit(B));
  t.is(limiter.consume(b, 100), 0);
  t.is(reason(limiter.admit(B)), 'connection_limit');
});

test('drop refuses a new connection from an address over its bandwidth cap', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter(limits({ max_bandwidth_per_ip: 1_000, bandwidth_window: 60_000 }), clock.read);
  const a = ticket(limiter.admit(A));
  t.is(limiter.consume(a, 1_000), 0);
  t.is(reason(limiter.admit(A)), 'bandwidth_limit');
  ticket(limiter.admit(B));
  clock.now += 60_000 + 3_000;
  ticket(limiter.admit(A));
});

test('throttle still refuses on the count limits, and admits an address over its bandwidth cap', (t) => {
  const limiter = new RateLimiter(
    limits({ max_connections_per_ip: 1, max_bandwidth_per_ip: 1_000, bandwidth_window: 60_000, action: 'throttle', throttle_minimum: 100 }),
    fakeClock().read,
  );
  const a = ticket(limiter.admit(A));
  t.is(reason(limiter.admit(A)), 'connection_limit');
  limiter.consume(a, 5_000);
  limiter.release(a);
  t.true(limiter.admit(A).allow);
});

test('log_only refuses nothing and reports each broken limit once per address per window', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter(
    limits({ max_connections_per_ip: 1, connections_window: 30_000, max_connection_attempts_per_ip: 2, attempts_window: 10_000, action: 'log_only' }),
    clock.read,
  );
  const violations: Array<string | undefined> = [];
  for (let i = 0; i < 6; i++) violations.push(ticket(limiter.admit(A)).violation);
  // Attempt 2 breaks the concurrency cap, attempt 3 the attempts limit too: each reported once.
  t.deepEqual(violations, [undefined, 'connection_limit', 'attempt_limit', undefined, undefined, undefined]);
  // Another address has its own reports.
  ticket(limiter.admit(B));
  t.is(ticket(limiter.admit(B)).violation, 'connection_limit');
  // A window later the attempts limit may be reported again; the concurrency one (30 s) not yet.
  clock.now += 10_000 + 500;
  t.is(ticket(limiter.admit(A)).violation, undefined);
  t.is(ticket(limiter.admit(A)).violation, undefined);
  t.is(ticket(limiter.admit(A)).violation, 'attempt_limit');
  clock.now += 20_000;
  t.is(ticket(limiter.admit(A)).violation, 'connection_limit');
});

test('log_only reports total_limit without refusing', (t) => {
  const limiter = new RateLimiter(limits({ max_total_connections: 1, action: 'log_only' }), fakeClock().read);
  t.is(ticket(limiter.admit(A)).violation, undefined);
  t.is(ticket(limiter.admit(B)).violation, 'total_limit');
  t.is(limiter.openConnections, 2);
});

test('a limiter with no limits keeps no state and does not read the clock per chunk', (t) => {
  let reads = 0;
  const limiter = new RateLimiter(OFF, () => {
    reads++;
    return 0;
  });
  const a = ticket(limiter.admit(A));
  for (let i = 0; i < 1_000; i++) t.is(limiter.consume(a, 65_536), 0);
  limiter.release(a);
  t.is(reads, 0);
  t.is(limiter.trackedAddresses, 0);
  t.is(limiter.openConnections, 0);
});

test('a limit without its window is refused at construction', (t) => {
  const clock = fakeClock().read;
  t.throws(() => new RateLimiter(limits({ max_connection_attempts_per_ip: 1 }), clock), { instanceOf: RangeError });
  t.throws(() => new RateLimiter(limits({ max_bandwidth_per_ip: 1 }), clock), { instanceOf: RangeError });
  t.throws(() => new RateLimiter(limits({ max_bandwidth_per_ip: 1, bandwidth_window: 1, action: 'throttle' }), clock), { instanceOf: RangeError });
  t.throws(() => new RateLimiter(OFF, clock, { maxAddresses: 0 }), { instanceOf: RangeError });
});
