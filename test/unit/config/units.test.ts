import test from 'ava';
import { formatDuration, formatSize, parseDuration, parseSize } from '../../../src/config/units.js';

const durations: Array<[string, number]> = [
  ['500ms', 500],
  ['30s', 30_000],
  ['1m', 60_000],
  ['1m30s', 90_000],
  ['1h', 3_600_000],
  ['1.5h', 5_400_000],
  ['2h45m10s', 9_910_000],
  ['0', 0],
  ['0s', 0],
  ['250us', 0.25],
  ['1000ns', 0.001],
  ['.5s', 500],
];
for (const [text, ms] of durations) {
  test(`duration ${text} is ${ms} ms`, (t) => {
    t.is(parseDuration(text), ms);
  });
}

for (const text of ['', '1', '60', '1x', '1 m', 'm', '-1s', '1m 30s', '1d', '1S', 's1']) {
  test(`"${text}" is not a duration`, (t) => {
    t.is(parseDuration(text), undefined);
  });
}

const sizes: Array<[string | number, number]> = [
  ['1B', 1],
  ['512KB', 512 * 1024],
  ['10MB', 10 * 1024 * 1024],
  ['10mb', 10 * 1024 * 1024],
  ['10 MB', 10 * 1024 * 1024],
  ['1.5GB', 1.5 * 1024 ** 3],
  ['1TB', 1024 ** 4],
  ['1MiB', 1024 ** 2],
  ['2kib', 2048],
  ['0.5KB', 512],
  [0, 0],
];
for (const [text, bytes] of sizes) {
  test(`size ${text} is ${bytes} bytes (1024-based)`, (t) => {
    t.is(parseSize(text), bytes);
  });
}

for (const text of ['10', '10XB', 'MB', '1.5', '-1MB', '10 M B', 'ten MB']) {
  test(`"${text}" is not a size`, (t) => {
    t.is(parseSize(text), undefined);
  });
}

test('a bare non-zero number is not a size', (t) => {
  t.is(parseSize(4096), undefined);
});

test('durations and sizes format back the way a user writes them', (t) => {
  t.is(formatDuration(90_000), '1m30s');
  t.is(formatDuration(250), '250ms');
  t.is(formatDuration(3_600_000), '1h');
  t.is(formatSize(10 * 1024 * 1024), '10MB');
  t.is(formatSize(1536 * 1024), '1536KB');
  t.is(formatSize(100), '100B');
});
