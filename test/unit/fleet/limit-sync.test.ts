/**
 * LimitSync with a fake store (issue 24): one exchange per tick and never two at once, the fleet's
 * answer applied to the limiter, a failed exchange's counts sent again later, on_store_down applied
 * and logged once per outage, the metrics' figures. test/integration/shared-limits.test.ts runs
 * the same against a real redis-server.
 */
import test from 'ava';
import type { SharedLimitsSettings, StoreDownPolicy } from '../../../src/config/types.js';
import { exchangeTimeoutMs, LimitSync, type SharedStore } from '../../../src/fleet/index.js';
import type { ExchangeParams, OwnCounts } from '../../../src/fleet/exchange-script.js';
import { RateLimiter } from '../../../src/policy/index.js';
import type { LogLevel } from '../../../src/telemetry/events.js';
import { ListenerStats } from '../../../src/telemetry/stats.js';
import { fakeClock, limits, ticket } from '../policy/fixtures.js';

const A = '192.0.2.1';
const B = '192.0.2.2';

interface Call {
  readonly params: ExchangeParams;
  readonly entries: readonly OwnCounts[];
  resolve(peers: number[]): void;
  reject(error: Error): void;
}

class FakeStore implements SharedStore {
  ready = true;
  problem = '';
  connecting = false;
  closed = false;
  readonly calls: Call[] = [];

  exchange(params: ExchangeParams, entries: readonly OwnCounts[]): Promise<number[]> {
    return new Promise((resolve, reject) => this.calls.push({ params, entries: [...entries], resolve, reject }));
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

function settings(onStoreDown: StoreDownPolicy = 'local'): SharedLimitsSettings {
  return {
    store: 'redis://127.0.0.1:6379/0',
    host: '127.0.0.1',
    port: 6379,
    db: 0,
    username: '',
    password: 'secret',
    tls: false,
    instance: 'edge-1',
    sync_interval: 100,
    on_store_down: onStoreDown,
    key_prefix: 'pp',
  };
}

function setUp(onStoreDown: StoreDownPolicy = 'local') {
  const clock = fakeClock(1_000_000);
  const rateLimits = limits({ max_connection_attempts_per_ip: 10, attempts_window: 60_000, max_connections_per_ip: 3 });
  const limiter = new RateLimiter(rateLimits, clock.read, { shared: true });
  const store = new FakeStore();
  const stats = new ListenerStats();
  const logs: Array<{ level: LogLevel; message: string }> = [];
  const sync = new LimitSync({
    listener: 'ssh',
    limits: rateLimits,
    settings: settings(onStoreDown),
    limiter,
    store,
    stats,
    clock: clock.read,
    log: (level, message) => logs.push({ level, message }),
  });
  return { clock, limiter, store, stats, logs, sync };
}

/** Lets the promise callbacks of a settled exchange run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

test('a tick sends what changed and applies what the fleet counts', async (t) => {
  const { limiter, store, stats, logs, sync } = setUp();
  ticket(limiter.admit(A));
  ticket(limiter.admit(B));
  sync.tick();
  t.is(store.calls.length, 1);
  const call = store.calls[0]!;
  t.deepEqual(call.entries.map((e) => [e.address, e.attempts, e.open]), [[A, 1, 1], [B, 1, 1]]);
  t.is(call.params.base, 'pp:ssh');
  t.is(call.params.instance, 'edge-1');
  t.is(call.params.attemptsWindowMs, 60_000);
  t.is(call.params.bytesWindowMs, 0, 'no bandwidth limit: the fleet\'s bytes are never summed');
  t.false(JSON.stringify(call.params).includes('secret'), 'the password is not part of the call');
  call.resolve([8, 0, 0, 0, 0, 2]);
  await settle();
  t.is(stats.sharedUp, 1);
  t.deepEqual(logs.map((l) => l.level), ['info']);
  t.regex(logs[0]!.message, /shared with the fleet through redis:\/\/127\.0\.0\.1:6379\/0 as instance edge-1/);
  // A: 1 here + 8 elsewhere; one more is the 10th, the next is refused.
  ticket(limiter.admit(A));
  const refused = limiter.admit(A);
  t.is(refused.allow ? '' : refused.reason, 'attempt_limit');
  // B: 1 open here + 2 elsewhere = the cap of 3.
  const full = limiter.admit(B);
  t.is(full.allow ? '' : full.reason, 'connection_limit');
  const delta = stats.takeDelta();
  t.is(delta.shared?.count, 1);
  t.is(delta.shared?.errors, 0);
  t.is(delta.shared?.up, 1);
});

test('one exchange in flight at most: a slow store makes exchanges rarer, never queued', async (t) => {
  const { limiter, store, sync } = setUp();
  ticket(limiter.admit(A));
  sync.tick();
  sync.tick();
  sync.tick();
  t.is(store.calls.length, 1);
  store.calls[0]!.resolve([0, 0, 0]);
  await settle();
  sync.tick();
  t.is(store.calls.length, 2);
  t.deepEqual(store.calls[1]!.entries, [], 'nothing changed: the call is the heartbeat alone');
});

test('a failed exchange: counts sent again with the next, on_store_down applied, logged once per outage', async (t) => {
  const { limiter, store, stats, logs, sync } = setUp('local');
  ticket(limiter.admit(A));
  sync.tick();
  store.calls[0]!.resolve([5, 0, 0]);
  await settle();
  t.is(limiter.sharedMode, 'shared');
  ticket(limiter.admit(A));
  sync.tick();
  store.calls[1]!.reject(new Error('Command timed out'));
  await settle();
  t.is(limiter.sharedMode, 'local');
  t.is(stats.sharedUp, 0);
  t.is(logs.at(-1)!.level, 'warning');
  t.regex(logs.at(-1)!.message, /cannot reach the shared-limits store .*Command timed out.*each host enforces its own counts/);
  // Local: the fleet's 5 no longer count, so 10 of A's own are admitted in all.
  for (let i = 0; i < 8; i++) limiter.release(ticket(limiter.admit(A)));
  t.false(limiter.admit(A).allow);
  sync.tick();
  store.calls[2]!.reject(new Error('Connection is closed.'));
  await settle();
  t.is(logs.filter((l) => l.level === 'warning').length, 1, 'a second failure in the same outage says nothing new');
  sync.tick();
  const resend = store.calls[3]!;
  t.deepEqual(resend.entries.map((e) => [e.address, e.attempts, e.open]), [[A, 11, 2]], 'what never reached the store goes again, whole');
  resend.resolve([0, 0, 0]);
  await settle();
  t.is(limiter.sharedMode, 'shared');
  t.is(stats.sharedUp, 1);
  t.is(logs.at(-1)!.level, 'notice');
  t.regex(logs.at(-1)!.message, /answers again/);
  const delta = stats.takeDelta();
  t.is(delta.shared?.errors, 2);
  t.is(delta.shared?.count, 2);
});

test('a store that is not connected is not called; on_store_down: closed refuses new connections as store_down', async (t) => {
  const { limiter, store, stats, logs, sync } = setUp('closed');
  store.ready = false;
  store.problem = 'connect ECONNREFUSED 127.0.0.1:6379';
  sync.tick();
  t.is(store.calls.length, 0);
  t.is(stats.takeDelta().shared?.errors, 1, 'an interval without a connection counts as a failed sync');
  const refused = limiter.admit(A);
  t.is(refused.allow ? '' : refused.reason, 'store_down');
  t.regex(logs[0]!.message, /ECONNREFUSED.*new connections are refused until it is back \(on_store_down: closed\)/);
  store.ready = true;
  sync.tick();
  store.calls[0]!.resolve([]);
  await settle();
  t.true(limiter.admit(A).allow);
});

test('on_store_down: open admits without per-address limits while the store is away', (t) => {
  const { limiter, store, sync } = setUp('open');
  store.ready = false;
  sync.tick();
  for (let i = 0; i < 20; i++) t.true(limiter.admit(A).allow);
});

test('stop waits for the exchange in flight, then closes the store; no tick after it', async (t) => {
  const { store, sync } = setUp();
  sync.tick();
  let stopped = false;
  const stopping = sync.stop().then(() => (stopped = true));
  await settle();
  t.false(stopped);
  t.false(store.closed);
  store.calls[0]!.resolve([]);
  await stopping;
  t.true(store.closed);
  sync.tick();
  t.is(store.calls.length, 1);
});

test('an exchange may take ten intervals, at least 0.5 s and at most 5 s', (t) => {
  t.is(exchangeTimeoutMs(10), 500);
  t.is(exchangeTimeoutMs(100), 1_000);
  t.is(exchangeTimeoutMs(10_000), 5_000);
});

test('the first connection has until the exchange timeout before the store counts as down', (t) => {
  const { limiter, store, stats, logs, sync } = setUp('closed');
  store.ready = false;
  store.connecting = true;
  sync.start();
  t.teardown(() => sync.stop());
  t.deepEqual(logs, [], 'nothing said while the first connection is being made');
  t.true(limiter.admit(A).allow, 'this host\'s own counts decide meanwhile');
  t.is(stats.takeDelta().shared?.errors, 0);
});
