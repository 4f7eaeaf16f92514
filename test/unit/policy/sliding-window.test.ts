import test from 'ava';
import { SlidingWindow } from '../../../src/policy/index.js';

const WINDOW = 60_000;
const BUCKETS = 20;
const WIDTH = WINDOW / BUCKETS;

/** A deterministic pseudo-random sequence, so a failure can be replayed. */
function lcg(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1_664_525) + 1_013_904_223) >>> 0;
    return state / 2 ** 32;
  };
}

test('an event counts in full until span - width after it, then fades, and is gone by span + width', (t) => {
  const window = new SlidingWindow(WINDOW, BUCKETS);
  window.add(1_000, 5);
  t.is(window.count(1_000), 5);
  t.is(window.count(1_000 + WINDOW - WIDTH - 1), 5);
  t.is(window.count(WINDOW), 5);
  // The event lies in the sub-bucket [0, 3000); halfway through that bucket leaving the window,
  // half of it is left.
  t.is(window.count(WINDOW + WIDTH / 2), 2.5);
  t.true(window.count(WINDOW + WIDTH - 1) > 0);
  t.false(window.isEmpty(WINDOW + WIDTH - 1));
  t.is(window.count(WINDOW + WIDTH), 0);
  t.true(window.isEmpty(WINDOW + WIDTH));
});

test('it slides: a burst just before a minute boundary still counts just after it', (t) => {
  const window = new SlidingWindow(WINDOW, BUCKETS);
  window.add(59_000, 100);
  t.is(window.count(61_000), 100);
  t.is(window.count(59_000 + WINDOW - WIDTH), 100);
  t.is(window.count(59_000 + WINDOW + WIDTH), 0);
});

test('the estimate stays within one sub-bucket of the exact sliding count', (t) => {
  const random = lcg(42);
  const window = new SlidingWindow(WINDOW, BUCKETS);
  const events: Array<{ time: number; amount: number }> = [];
  let now = 0;
  let checks = 0;
  while (now < 10 * WINDOW) {
    // Bursty traffic: long gaps and clusters, so whole and partial buckets both occur.
    now += random() < 0.1 ? random() * 20_000 : random() * 200;
    const amount = 1 + Math.floor(random() * 1_000);
    window.add(now, amount);
    events.push({ time: now, amount });

    const probe = now + random() * WINDOW * 1.2;
    const exact = events.filter((e) => e.time > probe - WINDOW && e.time <= probe).reduce((sum, e) => sum + e.amount, 0);
    // The sub-bucket straddling the trailing edge holds everything the estimate may get wrong.
    const edgeBucket = Math.floor(probe / WIDTH) - BUCKETS;
    const straddling = events
      .filter((e) => Math.floor(e.time / WIDTH) === edgeBucket)
      .reduce((sum, e) => sum + e.amount, 0);
    const estimate = new SlidingWindow(WINDOW, BUCKETS);
    for (const e of events) estimate.add(e.time, e.amount);
    t.true(Math.abs(estimate.count(probe) - exact) <= straddling + 1e-6,
      `at ${probe}: estimate ${estimate.count(probe)}, exact ${exact}, straddling bucket ${straddling}`);
    checks++;
    if (events.length > 400) events.splice(0, events.length - 400);
    if (checks >= 300) break;
  }
  t.true(checks >= 300);
});

test('addWithin is count() then add() in one: the same answers and the same sums, the clock stepping back included', (t) => {
  const random = lcg(7);
  const combined = new SlidingWindow(WINDOW, BUCKETS);
  const separate = new SlidingWindow(WINDOW, BUCKETS);
  const cap = 100_000;
  let now = 1_000;
  let added = 0;
  let refused = 0;
  for (let i = 0; i < 5_000; i++) {
    // Mostly forward, in small and large steps; now and then back by up to two sub-buckets.
    const step = random();
    now += step < 0.05 ? -random() * 2 * WIDTH : step < 0.15 ? random() * 20_000 : random() * 300;
    const amount = 1 + Math.floor(random() * 5_000);
    const expected = separate.count(now) + amount <= cap;
    if (expected) separate.add(now, amount);
    t.is(combined.addWithin(now, amount, cap), expected, `step ${i} at ${now}`);
    if (expected) added++;
    else refused++;
    const probe = now + random() * WINDOW;
    t.is(combined.count(probe), separate.count(probe), `sums at ${probe}`);
  }
  // Both outcomes were exercised.
  t.true(added > 100 && refused > 100, `added ${added}, refused ${refused}`);
});

test('a steady rate reads as that rate at every moment, with no reset', (t) => {
  const window = new SlidingWindow(WINDOW, BUCKETS);
  for (let now = 0; now < 5 * WINDOW; now += 100) {
    window.add(now, 1);
    if (now >= WINDOW) {
      const count = window.count(now);
      // 600 events per window; only the straddling bucket (30 events) is estimated.
      t.true(count >= 600 - 30 && count <= 600 + 30, `count ${count} at ${now}`);
    }
  }
});

test('isEmpty turns false again when something is added', (t) => {
  const window = new SlidingWindow(1_000, 10);
  t.true(window.isEmpty(0));
  window.add(0, 1);
  t.false(window.isEmpty(500));
  t.true(window.isEmpty(1_100));
  window.add(5_000, 2);
  t.false(window.isEmpty(5_000));
  t.is(window.count(5_000), 2);
});

test('a clock that steps back files events under their own sub-bucket', (t) => {
  const window = new SlidingWindow(WINDOW, BUCKETS);
  window.add(100_000, 1);
  window.add(90_000, 1);
  t.is(window.count(100_000), 2);
  // Older than the whole ring: already outside the window, ignored.
  window.add(100_000 - 2 * WINDOW, 50);
  t.is(window.count(100_000), 2);
  // The back-dated event leaves when its own time says so, before the other one.
  t.is(window.count(90_000 + WINDOW + WIDTH), 1);
});

test('a snapshot restores under another clock origin, forgetting no earlier and at most a sub-bucket later', (t) => {
  const build = (): SlidingWindow => {
    const window = new SlidingWindow(WINDOW, BUCKETS);
    window.add(1_000, 10);
    window.add(30_000, 20);
    window.add(50_000, 30);
    return window;
  };
  const taken = 55_000;
  const entries = JSON.parse(JSON.stringify(build().snapshot(taken))) as Array<[number, number]>;
  t.deepEqual(entries.map(([, amount]) => amount), [10, 20, 30]);

  // The next process's clock has another origin, in and out of phase with the sub-buckets.
  for (const origin of [7_777_777, 3_000_000, 5]) {
    const restored = SlidingWindow.restore(WINDOW, entries, origin, BUCKETS);
    const original = build();
    const originalOneBucketEarlier = build();
    t.is(restored.count(origin), 60);
    for (let x = 0; x <= WINDOW + 2 * WIDTH; x += 250) {
      const now = restored.count(origin + x);
      t.true(now >= original.count(taken + x) - 1e-9, `origin ${origin}, +${x}: ${now} forgets too early`);
      t.true(now <= originalOneBucketEarlier.count(taken + x - WIDTH) + 1e-9, `origin ${origin}, +${x}: ${now} remembers too long`);
    }
    t.is(restored.count(origin + WINDOW + 2 * WIDTH), 0);
  }
});

test('restoring into a shorter window drops what is older than it', (t) => {
  const window = new SlidingWindow(WINDOW, BUCKETS);
  window.add(0, 10);
  window.add(50_000, 20);
  const restored = SlidingWindow.restore(10_000, window.snapshot(55_000), 0, BUCKETS);
  t.is(restored.count(0), 20);
});

test('bad construction arguments are refused', (t) => {
  t.throws(() => new SlidingWindow(0), { instanceOf: RangeError });
  t.throws(() => new SlidingWindow(Number.NaN), { instanceOf: RangeError });
  t.throws(() => new SlidingWindow(1_000, 0), { instanceOf: RangeError });
  t.throws(() => new SlidingWindow(1_000, 2.5), { instanceOf: RangeError });
});
