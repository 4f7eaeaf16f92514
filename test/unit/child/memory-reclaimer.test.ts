/** The memory reclaimer: one full collection once a flood's addresses have been swept. */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { MemoryReclaimer, RECLAIM_MIN_DROP } from '../../../src/child/memory-reclaimer.js';
import { trimNativeHeap } from '../../../src/native/addon.js';
import { CHILD_NODE_FLAGS } from '../../../src/supervisor/child-process.js';

function reclaimer(): { r: MemoryReclaimer; calls: () => number } {
  let calls = 0;
  const r = new MemoryReclaimer(() => calls++);
  return { r, calls: () => calls };
}

test('a flood swept a tenth per pass: one collection, when the table stops shrinking', (t) => {
  const { r, calls } = reclaimer();
  for (const size of [5, 40_000, 80_000, 100_000]) r.observe(size);
  let size = 100_000;
  while (size > 10) {
    size = Math.floor(size * 0.9);
    r.observe(size);
    t.is(calls(), 0, `not while shrinking (${size})`);
  }
  r.observe(size);
  t.is(calls(), 2, 'one reclaim: two collections back to back');
  t.is(r.collections, 1);
  r.observe(size);
  r.observe(size + 3);
  r.observe(size);
  t.is(r.collections, 1, 'not again without a new flood');
});

test('the C heap is trimmed after the collections, once per reclaim', (t) => {
  const order: string[] = [];
  const r = new MemoryReclaimer(() => order.push('gc'), () => order.push('trim'));
  r.observe(50_000);
  r.observe(0);
  r.observe(0);
  r.observe(0);
  t.deepEqual(order, ['gc', 'gc', 'trim']);
});

test('trimNativeHeap answers without throwing, with or without the addon', (t) => {
  t.is(typeof trimNativeHeap(), 'boolean');
});

test('small tables and small drops never cost a collection', (t) => {
  const { r, calls } = reclaimer();
  r.observe(RECLAIM_MIN_DROP - 1);
  r.observe(0);
  r.observe(0);
  r.observe(200_000);
  r.observe(200_000 - RECLAIM_MIN_DROP * 2);
  r.observe(200_000 - RECLAIM_MIN_DROP * 2);
  t.is(calls(), 0, 'a drop under half the peak is ordinary churn');
});

test('without gc() exposed nothing is asked for', (t) => {
  const r = new MemoryReclaimer(null);
  r.observe(50_000);
  r.observe(0);
  r.observe(0);
  t.is(r.collections, 0);
});

test("children's Node flags expose gc()", (t) => {
  const out = execFileSync(process.execPath, [...CHILD_NODE_FLAGS, '-e', 'process.stdout.write(typeof gc)']).toString();
  t.is(out, 'function');
});
