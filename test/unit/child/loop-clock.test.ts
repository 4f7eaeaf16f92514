import test from 'ava';
import { loopClock, loopClockIsNative } from '../../../src/child/loop-clock.js';

test('on Linux the clock is the event loop\'s own time (the addon is built)', (t) => {
  if (process.platform !== 'linux') {
    t.false(loopClockIsNative());
    return;
  }
  t.true(loopClockIsNative());
});

test('one clock per process', (t) => {
  t.is(loopClock(), loopClock());
});

test('it never goes back, whole milliseconds, across many turns of the loop', async (t) => {
  const clock = loopClock();
  let previous = clock();
  for (let i = 0; i < 500; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    const now = clock();
    t.true(now >= previous, `turn ${i}: ${now} after ${previous}`);
    if (loopClockIsNative()) t.true(Number.isInteger(now));
    previous = now;
  }
});

test('a timer of 25 ms fires no earlier than 25 ms by this clock (timers run on the same time)', async (t) => {
  const clock = loopClock();
  for (let i = 0; i < 5; i++) {
    const before = clock();
    const fired = await new Promise<number>((resolve) => setTimeout(() => resolve(clock()), 25));
    t.true(fired - before >= 25, `${fired - before} ms`);
  }
});
