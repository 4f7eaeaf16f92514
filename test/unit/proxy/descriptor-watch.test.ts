/**
 * DescriptorWatch: counts descriptors only when the listener's tally nears the limit, reports a
 * full table, follows a limit changed while running, and reads the real /proc/self.
 */
import test from 'ava';
import { openSync, closeSync } from 'node:fs';
import { DescriptorWatch, LIMIT_READ_EVERY, procProbe, type DescriptorProbe } from '../../../src/proxy/descriptor-watch.js';

function fakeProbe(state: { limit: number; open: number }): DescriptorProbe & { counts: number; limitReads: number } {
  const probe = {
    counts: 0,
    limitReads: 0,
    limit: () => {
      probe.limitReads++;
      return state.limit;
    },
    open: () => {
      probe.counts++;
      return state.open;
    },
  };
  return probe;
}

test('far from the limit the descriptors are not counted; near it they are, and a full table is reported', (t) => {
  const state = { limit: 1000, open: 20 };
  const probe = fakeProbe(state);
  let inUse = 0;
  let full = 0;
  const watch = new DescriptorWatch({ inUse: () => inUse, onFull: () => full++, probe });
  const afterBaseline = probe.counts;

  inUse = 100;
  t.false(watch.check());
  t.is(probe.counts, afterBaseline, 'counted while far from the limit');

  inUse = 940; // 20 + 940 + a margin of 50 reaches 1000
  state.open = 960;
  t.false(watch.check(), 'not full yet');
  t.is(probe.counts, afterBaseline + 1);

  state.open = 999; // one short: the next accept and its dial cannot both succeed
  t.true(watch.check());
  state.open = 1000;
  t.true(watch.check());
  t.is(full, 2);
});

test('a limit lowered while running (prlimit) is followed within LIMIT_READ_EVERY looks', (t) => {
  const state = { limit: 65536, open: 130 };
  let full = 0;
  const watch = new DescriptorWatch({ inUse: () => 110, onFull: () => full++, probe: fakeProbe(state) });
  t.false(watch.check());
  state.limit = 128;
  let looks = 1;
  while (!watch.check()) {
    looks++;
    if (looks > LIMIT_READ_EVERY) break;
  }
  t.true(looks <= LIMIT_READ_EVERY, `seen after ${looks} looks`);
  t.is(full, 1);
});

test('far from the limit it is read once per LIMIT_READ_EVERY looks; near it, at every look (a raise is seen at once)', (t) => {
  const state = { limit: 1000, open: 20 };
  const probe = fakeProbe(state);
  let inUse = 10;
  let full = 0;
  const watch = new DescriptorWatch({ inUse: () => inUse, onFull: () => full++, probe });
  const before = probe.limitReads;
  for (let i = 0; i < LIMIT_READ_EVERY * 3; i++) watch.check();
  t.is(probe.limitReads - before, 3);

  inUse = 960; // near: 20 + 960 + 50 ≥ 1000
  state.open = 1000;
  state.limit = 4096; // raised meanwhile
  const near = probe.limitReads;
  t.false(watch.check(), 'the raised limit is read before counting');
  t.is(probe.limitReads - near, 1);
  t.is(full, 0);
});

test('no limit, or no way to count, means no report and no timer', (t) => {
  const unlimited = new DescriptorWatch({ inUse: () => 1e9, onFull: () => t.fail(), probe: fakeProbe({ limit: Infinity, open: 5 }) });
  t.false(unlimited.check());
  const blind = new DescriptorWatch({ inUse: () => 1e9, onFull: () => t.fail(), probe: fakeProbe({ limit: 64, open: -1 }) });
  t.false(blind.check());
  blind.start(); // does nothing: nothing to stop
  blind.stop();
});

test('the /proc probe reads this process: the limit is a number and opening a file counts one more', (t) => {
  const limit = procProbe.limit();
  t.true(limit > 0);
  const before = procProbe.open();
  const fd = openSync('/proc/self/limits', 'r');
  t.teardown(() => closeSync(fd));
  t.is(procProbe.open(), before + 1);
});

test('a table too full to list /proc/self/fd counts as full', (t) => {
  let full = 0;
  const watch = new DescriptorWatch({ inUse: () => 120, onFull: () => full++, probe: fakeProbe({ limit: 128, open: Infinity }) });
  t.true(watch.check());
  t.is(full, 1);
});

test('a limit that cannot be read just now (the table is full) is taken as last read', (t) => {
  const state = { limit: 128, open: 60 };
  let full = 0;
  const watch = new DescriptorWatch({ inUse: () => 120, onFull: () => full++, probe: fakeProbe(state) });
  t.false(watch.check());
  state.limit = NaN;
  state.open = Infinity;
  t.true(watch.check());
  t.is(full, 1);
});

test('an accepted descriptor numbered within two of the limit is reported at once', (t) => {
  let full = 0;
  const watch = new DescriptorWatch({ inUse: () => 0, onFull: () => full++, probe: fakeProbe({ limit: 128, open: 20 }) });
  watch.accepted(100);
  watch.accepted(undefined);
  t.is(full, 0);
  watch.accepted(126);
  t.is(full, 1);
});

test('without a descriptor number (the public path), the listener\'s tally near the limit is reported', (t) => {
  let full = 0;
  let held = 0;
  const watch = new DescriptorWatch({ inUse: () => held, onFull: () => full++, probe: fakeProbe({ limit: 128, open: 20 }) });
  held = 100;
  watch.acceptedUnnumbered();
  t.is(full, 0, '20 + 100 + this one: far enough');
  held = 105;
  watch.acceptedUnnumbered();
  t.is(full, 1, '20 + 105 + this one is within two of 128');
});
