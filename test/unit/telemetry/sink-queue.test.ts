import test from 'ava';
import { SinkQueue } from '../../../src/telemetry/sinks/sink-queue.js';

test('keeps order and refuses beyond its capacity', (t) => {
  const queue = new SinkQueue<number>(3);
  t.true(queue.push(1));
  t.true(queue.push(2));
  t.true(queue.push(3));
  t.false(queue.push(4));
  t.is(queue.length, 3);
  t.deepEqual([queue.shift(), queue.shift(), queue.shift(), queue.shift()], [1, 2, 3, undefined]);
});

test('wraps around its ring many times without losing order', (t) => {
  const queue = new SinkQueue<number>(4);
  const out: number[] = [];
  for (let i = 0; i < 100; i++) {
    t.true(queue.push(i));
    if (i % 2 === 1) out.push(queue.shift()!, queue.shift()!);
  }
  t.deepEqual(out, Array.from({ length: 100 }, (_, i) => i));
});

test('unshift puts items back at the front, within the same bound', (t) => {
  const queue = new SinkQueue<string>(3);
  queue.push('c');
  t.true(queue.unshift('b'));
  t.true(queue.unshift('a'));
  t.false(queue.unshift('z'));
  t.deepEqual([queue.shift(), queue.shift(), queue.shift()], ['a', 'b', 'c']);
});

test('clear reports how many items it threw away', (t) => {
  const queue = new SinkQueue<number>(5);
  for (let i = 0; i < 4; i++) queue.push(i);
  t.is(queue.clear(), 4);
  t.is(queue.length, 0);
  t.true(queue.push(9));
  t.is(queue.shift(), 9);
});

test('a capacity below 1 is a programming error', (t) => {
  t.throws(() => new SinkQueue(0), { instanceOf: RangeError });
});
