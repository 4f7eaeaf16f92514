import test from 'ava';
import { Backoff } from '../../../src/supervisor/restart-policy.js';

function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

test('delays double from 100 ms to a cap of 30 s', (t) => {
  const c = clock();
  const backoff = new Backoff(undefined, c.now);
  const delays = Array.from({ length: 12 }, () => backoff.failed());
  t.deepEqual(delays, [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]);
});

test('a stable minute up resets the delay', (t) => {
  const c = clock();
  const backoff = new Backoff(undefined, c.now);
  for (let i = 0; i < 5; i++) backoff.failed();
  backoff.up();
  c.advance(59_999);
  t.is(backoff.failed(), 3200, 'not yet stable');
  backoff.up();
  c.advance(60_000);
  t.is(backoff.failed(), 100);
  t.is(backoff.failed(), 200);
});

test('being up again and again without a stable minute keeps backing off', (t) => {
  const c = clock();
  const backoff = new Backoff(undefined, c.now);
  const delays: number[] = [];
  for (let i = 0; i < 4; i++) {
    backoff.up();
    c.advance(5_000);
    delays.push(backoff.failed());
  }
  t.deepEqual(delays, [100, 200, 400, 800]);
});
