/**
 * The denylist: checked before the allowlist, IPv4-mapped clients matched as IPv4, a refused
 * client costing no quota, and no denylist object at all when the list is empty.
 */
import test from 'ava';
import { Denylist, ListenerPolicy, RateLimiter } from '../../../src/policy/index.js';
import { fakeClock, limits } from './fixtures.js';

function policy(denylist: string[], allowlist = ['0.0.0.0/0', '::/0']): ListenerPolicy {
  return ListenerPolicy.fromConfig(
    { allowlist, denylist, rate_limits: limits({ max_connection_attempts_per_ip: 2, attempts_window: 60_000 }) },
    fakeClock().read,
  );
}

const reasonOf = (verdict: ReturnType<ListenerPolicy['admit']>): string => (verdict.allow ? 'allowed' : verdict.reason);

test('an address in both lists is refused as denylist; the allowlist is not even asked', (t) => {
  const p = policy(['192.0.2.0/24'], ['192.0.2.7/32']);
  t.is(reasonOf(p.admit('192.0.2.7')), 'denylist');
  t.is(reasonOf(p.admit('198.51.100.1')), 'acl', 'outside both: the allowlist refuses');
});

test('denied clients cost no quota', (t) => {
  const p = policy(['192.0.2.9/32']);
  for (let i = 0; i < 20; i++) t.is(reasonOf(p.admit('192.0.2.9')), 'denylist');
  t.is(p.limiter.trackedAddresses, 0);
  t.true(p.admit('192.0.2.10').allow);
});

test('IPv4-mapped clients meet the IPv4 entries, and a mapped entry is the IPv4 rule it names', (t) => {
  const p = policy(['10.0.0.0/8', '::ffff:192.0.2.0/120']);
  t.is(reasonOf(p.admit('::ffff:10.1.2.3')), 'denylist');
  t.is(reasonOf(p.admit('::ffff:a01:203')), 'denylist', 'the hex spelling too');
  t.is(reasonOf(p.admit('192.0.2.200')), 'denylist');
  t.true(p.admit('11.0.0.1').allow);
});

test('::/0 in the denylist refuses every IPv6 client and no IPv4 one', (t) => {
  const p = policy(['::/0']);
  t.is(reasonOf(p.admit('2001:db8::1')), 'denylist');
  t.is(reasonOf(p.admit('::1')), 'denylist');
  t.true(p.admit('::ffff:127.0.0.1').allow);
  t.true(p.admit('127.0.0.1').allow);
});

test('IPv6 networks and zones', (t) => {
  const p = policy(['2001:db8:bad::/48']);
  t.is(reasonOf(p.admit('2001:db8:bad:1::5')), 'denylist');
  t.is(reasonOf(p.admit('2001:DB8:BAD::1%eth0')), 'denylist');
  t.true(p.admit('2001:db8:600d::1').allow);
});

test('Denylist on its own', (t) => {
  t.true(new Denylist([]).isEmpty);
  const list = new Denylist(['192.0.2.1/32']);
  t.false(list.isEmpty);
  t.true(list.denies('192.0.2.1'));
  t.true(list.denies('::ffff:192.0.2.1'));
  t.false(list.denies('192.0.2.2'));
  t.false(list.denies('not an address'));
});

test('a policy restored with its limiter keeps the denylist', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter(limits({}), clock.read);
  const p = ListenerPolicy.withLimiter({ allowlist: ['0.0.0.0/0'], denylist: ['192.0.2.1/32'] }, limiter);
  t.is(reasonOf(p.admit('192.0.2.1')), 'denylist');
  t.is(p.limiter, limiter);
});
