import test from 'ava';
import { OFF, limits, fakeClock, ticket } from './fixtures.js';
import { CONSUME_DROP, CONSUME_OK, RateLimiter, type AdmitVerdict, type LimiterSnapshot } from '../../../src/policy/index.js';

const MINUTE = 60_000;

function reason(verdict: AdmitVerdict): string {
  return verdict.allow ? 'allowed' : verdict.reason;
}

function address(i: number): string {
  return `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
}

/** Runs sweep() until a whole pass found nothing more to drop. */
function sweepAll(limiter: RateLimiter): void {
  for (let i = 0; i < 1_000 && (limiter.sweep(100) > 0 || i < 3); i++);
}

const WINDOWED = limits({
  max_connections_per_ip: 5,
  max_connection_attempts_per_ip: 10,
  attempts_window: MINUTE,
  max_bandwidth_per_ip: 1_000_000,
  bandwidth_window: MINUTE,
});

test('sweep drops addresses with nothing left and keeps those with open connections or live windows', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter(WINDOWED, clock.read);
  const open = ticket(limiter.admit('192.0.2.1'));
  limiter.release(ticket(limiter.admit('192.0.2.2')));
  clock.now = 50_000;
  limiter.release(ticket(limiter.admit('192.0.2.3')));
  t.is(limiter.trackedAddresses, 3);

  clock.now = 10 * MINUTE;
  sweepAll(limiter);
  // .1 still has a connection open; .2 and .3 are gone.
  t.is(limiter.trackedAddresses, 1);
  limiter.release(open);
  // Closing the last connection of an address with empty windows drops it at once.
  t.is(limiter.trackedAddresses, 0);
});

test('sweep keeps an address whose windows are not yet empty', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter(WINDOWED, clock.read);
  limiter.release(ticket(limiter.admit('192.0.2.1')));
  clock.now = MINUTE - 1;
  sweepAll(limiter);
  t.is(limiter.trackedAddresses, 1);
  clock.now = MINUTE + MINUTE / 20;
  sweepAll(limiter);
  t.is(limiter.trackedAddresses, 0);
});

test('sweep does a bounded slice of work per call and picks up where it stopped', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter(WINDOWED, clock.read);
  for (let i = 0; i < 1_000; i++) limiter.release(ticket(limiter.admit(address(i))));
  clock.now = 10 * MINUTE;
  t.is(limiter.sweep(100), 100);
  t.is(limiter.trackedAddresses, 900);
  let calls = 1;
  while (limiter.trackedAddresses > 0) {
    t.true(limiter.sweep(100) <= 100);
    calls++;
  }
  t.is(calls, 10);
});

test('with only a concurrency cap, state lives exactly as long as a connection is open', (t) => {
  const limiter = new RateLimiter(limits({ max_connections_per_ip: 2 }), fakeClock().read);
  const tickets = Array.from({ length: 100 }, (_, i) => ticket(limiter.admit(address(i))));
  t.is(limiter.trackedAddresses, 100);
  for (const each of tickets) limiter.release(each);
  t.is(limiter.trackedAddresses, 0);
});

test('at the ceiling, new addresses are refused while tracked ones keep working, until room is freed', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter(WINDOWED, clock.read, { maxAddresses: 3 });
  for (let i = 0; i < 3; i++) limiter.release(ticket(limiter.admit(address(i))));
  t.is(reason(limiter.admit(address(3))), 'attempt_limit');
  t.is(limiter.trackedAddresses, 3);
  ticket(limiter.admit(address(0)));
  // Once the windows of the old addresses are empty, admitting makes room by itself.
  clock.now = 2 * MINUTE;
  ticket(limiter.admit(address(3)));
  t.true(limiter.trackedAddresses <= 3);
});

test('a flood of distinct addresses cannot grow the state past the ceiling', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter(WINDOWED, clock.read, { maxAddresses: 1_000 });
  let refused = 0;
  for (let i = 0; i < 20_000; i++) {
    clock.now += 1;
    const verdict = limiter.admit(address(i));
    if (verdict.allow) limiter.release(verdict);
    else refused++;
    t.true(limiter.trackedAddresses <= 1_000);
  }
  t.true(refused > 0);
});

test('log_only at the ceiling admits new addresses untracked and reports it once per window', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter({ ...WINDOWED, action: 'log_only' }, clock.read, { maxAddresses: 2 });
  ticket(limiter.admit(address(0)));
  ticket(limiter.admit(address(1)));
  const first = ticket(limiter.admit(address(2)));
  const second = ticket(limiter.admit(address(3)));
  t.is(first.violation, 'attempt_limit');
  t.is(second.violation, undefined);
  t.is(limiter.trackedAddresses, 2);
  t.is(limiter.openConnections, 4);
  t.is(limiter.consume(first, 10_000_000), CONSUME_OK);
  limiter.release(first);
  limiter.release(second);
  t.is(limiter.openConnections, 2);
});

function roundTrip(snapshot: LimiterSnapshot): LimiterSnapshot {
  return JSON.parse(JSON.stringify(snapshot)) as LimiterSnapshot;
}

test('snapshot and restore carry windows over: no fresh quotas for anyone', (t) => {
  const old = fakeClock(1_000_000);
  const before = new RateLimiter(WINDOWED, old.read);
  for (let i = 0; i < 10; i++) {
    const each = ticket(before.admit('192.0.2.1'));
    before.release(each);
  }
  t.is(reason(before.admit('192.0.2.1')), 'attempt_limit');
  const heavy = ticket(before.admit('192.0.2.2'));
  t.is(before.consume(heavy, 999_000), CONSUME_OK);
  before.release(heavy);

  // The next child's clock has another origin.
  const next = fakeClock(5);
  const after = RateLimiter.restore(WINDOWED, next.read, roundTrip(before.snapshot()));
  t.is(after.trackedAddresses, 2);
  t.is(reason(after.admit('192.0.2.1')), 'attempt_limit');
  const again = ticket(after.admit('192.0.2.2'));
  t.is(after.consume(again, 1_000), CONSUME_OK);
  t.is(after.consume(again, 1_000), CONSUME_DROP);
  // The windows expire in the new child as they would have in the old one.
  next.now += MINUTE + MINUTE / 10;
  ticket(after.admit('192.0.2.1'));
  t.is(after.consume(again, 500_000), CONSUME_OK);
});

test('open connections are inherited until the previous child reports them closed', (t) => {
  const rules = limits({ max_connections_per_ip: 2, max_total_connections: 3 });
  const before = new RateLimiter(rules, fakeClock().read);
  ticket(before.admit('192.0.2.1'));
  ticket(before.admit('192.0.2.1'));
  ticket(before.admit('192.0.2.2'));
  const after = RateLimiter.restore(rules, fakeClock().read, roundTrip(before.snapshot()));
  t.is(after.openConnections, 3);
  t.is(reason(after.admit('192.0.2.1')), 'connection_limit');
  t.is(reason(after.admit('192.0.2.3')), 'total_limit');
  after.releaseInherited('192.0.2.1');
  const admitted = ticket(after.admit('192.0.2.1'));
  t.is(reason(after.admit('192.0.2.1')), 'connection_limit');
  after.clearInherited();
  t.is(after.openConnections, 1);
  ticket(after.admit('192.0.2.1'));
  after.release(admitted);
  t.is(after.openConnections, 1);
});

test('inherited connections without per-address state still count against the total', (t) => {
  const rules = limits({ max_total_connections: 2 });
  const before = new RateLimiter(rules, fakeClock().read);
  ticket(before.admit('192.0.2.1'));
  ticket(before.admit('192.0.2.2'));
  const after = RateLimiter.restore(rules, fakeClock().read, roundTrip(before.snapshot()));
  t.is(reason(after.admit('192.0.2.3')), 'total_limit');
  after.releaseInherited('192.0.2.1');
  ticket(after.admit('192.0.2.3'));
});

test('a throttled address stays throttled across a reload', (t) => {
  const rules = limits({ max_bandwidth_per_ip: 100_000, bandwidth_window: MINUTE, action: 'throttle', throttle_minimum: 10_000 });
  const clock = fakeClock();
  const before = new RateLimiter(rules, clock.read);
  const each = ticket(before.admit('192.0.2.1'));
  before.consume(each, 100_000);
  before.consume(each, 5_000);
  t.true(before.consume(each, 5_000) > 0);
  const after = RateLimiter.restore(rules, fakeClock(42).read, roundTrip(before.snapshot()));
  const again = ticket(after.admit('192.0.2.1'));
  t.true(after.consume(again, 5_000) > 0);
});

test('restoring under new limits re-files the old events into the new windows', (t) => {
  const clock = fakeClock();
  const before = new RateLimiter(limits({ max_connection_attempts_per_ip: 100, attempts_window: 10 * MINUTE }), clock.read);
  before.release(ticket(before.admit('192.0.2.1')));
  clock.now = 5 * MINUTE;
  for (let i = 0; i < 3; i++) before.release(ticket(before.admit('192.0.2.1')));
  const snapshot = roundTrip(before.snapshot());
  // Shorter window: only the recent attempts still count.
  const shorter = RateLimiter.restore(limits({ max_connection_attempts_per_ip: 4, attempts_window: MINUTE }), fakeClock().read, snapshot);
  ticket(shorter.admit('192.0.2.1'));
  t.is(reason(shorter.admit('192.0.2.1')), 'attempt_limit');
  // Limit turned off: nothing to carry.
  const off = RateLimiter.restore(OFF, fakeClock().read, snapshot);
  t.is(off.trackedAddresses, 0);
});

test('a snapshot of an unknown version is refused', (t) => {
  const snapshot = { version: 2, addresses: [], untracked_open: 0 } as unknown as LimiterSnapshot;
  t.throws(() => RateLimiter.restore(OFF, fakeClock().read, snapshot), { instanceOf: TypeError });
});

test('a snapshot leaves out addresses with nothing to carry', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter(WINDOWED, clock.read);
  limiter.release(ticket(limiter.admit('192.0.2.1')));
  clock.now = 10 * MINUTE;
  t.deepEqual(limiter.snapshot(), { version: 1, addresses: [], untracked_open: 0 });
});

test('sweep by default looks at a tenth of a large table per call, so a pass takes about ten calls', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter(WINDOWED, clock.read);
  for (let i = 0; i < 50_000; i++) {
    const verdict = limiter.admit(address(i));
    if (verdict.allow) limiter.release(verdict);
  }
  t.is(limiter.trackedAddresses, 50_000);
  clock.now += 60 * MINUTE; // every window long past
  t.is(limiter.sweep(), 5_000);
  let calls = 1;
  while (limiter.trackedAddresses > 0 && calls < 100) {
    limiter.sweep();
    calls++;
  }
  t.is(limiter.trackedAddresses, 0);
  t.true(calls <= 12, `${calls} calls`);
});
