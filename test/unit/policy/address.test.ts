import test from 'ava';
import { normalizeAddress } from '../../../src/policy/index.js';

const cases: ReadonlyArray<readonly [input: string, expected: string]> = [
  ['10.1.2.3', '10.1.2.3'],
  ['::ffff:10.1.2.3', '10.1.2.3'],
  ['::FFFF:10.1.2.3', '10.1.2.3'],
  ['0:0:0:0:0:ffff:a01:203', '10.1.2.3'],
  ['::ffff:a01:203', '10.1.2.3'],
  ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
  ['2001:db8::1', '2001:db8::1'],
  ['::1', '::1'],
  ['fe80::1%eth0', 'fe80::1%eth0'],
  ['FE80::1%eth0.100', 'fe80::1%eth0.100'],
  ['::ffff:10.1.2.3%eth0', '10.1.2.3'],
  // IPv4-compatible (deprecated), not IPv4-mapped: it must stay IPv6.
  ['::10.1.2.3', '::a01:203'],
  // Not addresses: unchanged, for the allowlist to deny.
  ['::ffff:10.1.2', '::ffff:10.1.2'],
  ['not-an-ip', 'not-an-ip'],
  ['', ''],
];

for (const [input, expected] of cases) {
  test(`normalizeAddress(${JSON.stringify(input)}) is ${JSON.stringify(expected)}`, (t) => {
    t.is(normalizeAddress(input), expected);
  });
}

test('normalising is idempotent', (t) => {
  for (const [input] of cases) t.is(normalizeAddress(normalizeAddress(input)), normalizeAddress(input));
});
