/**
 * TargetPool: each balance mode, backups, rise/fall, passive failures, and the changes it reports.
 */
import test from 'ava';
import type { BalanceMode, TargetConfig } from '../../../src/config/types.js';
import { TargetPool, type PoolTarget, type TargetStateChange } from '../../../src/proxy/target-pool.js';

function targets(...specs: string[]): TargetConfig[] {
  return specs.map((spec) => {
    const backup = spec.endsWith('!');
    const address = backup ? spec.slice(0, -1) : spec;
    const colon = address.lastIndexOf(':');
    return { address, endpoint: { host: address.slice(0, colon), port: Number(address.slice(colon + 1)) }, backup };
  });
}

function pool(balance: BalanceMode, specs: string[], options: { rise?: number; fall?: number } = {}): { pool: TargetPool; changes: TargetStateChange[] } {
  const changes: TargetStateChange[] = [];
  const p = new TargetPool(targets(...specs), { balance, rise: options.rise ?? 2, fall: options.fall ?? 3, onChange: (c) => changes.push(c) });
  return { pool: p, changes };
}

const names = (picked: Array<PoolTarget | undefined>): string[] => picked.map((t) => t?.address ?? '-');

function byAddress(p: TargetPool, address: string): PoolTarget {
  return p.targets.find((t) => t.address === address)!;
}

test('round_robin: in turn, skipping targets that are down', (t) => {
  const { pool: p } = pool('round_robin', ['a:1', 'b:1', 'c:1']);
  t.deepEqual(names([1, 2, 3, 4].map(() => p.pick('192.0.2.1'))), ['a:1', 'b:1', 'c:1', 'a:1']);
  p.connectFailed(byAddress(p, 'b:1'), 'refused');
  t.deepEqual(names([1, 2, 3, 4].map(() => p.pick('192.0.2.1'))), ['c:1', 'a:1', 'c:1', 'a:1']);
});

test('least_connections: the fewest open connections, ties in turn', (t) => {
  const { pool: p } = pool('least_connections', ['a:1', 'b:1', 'c:1']);
  const a = byAddress(p, 'a:1');
  const b = byAddress(p, 'b:1');
  a.active = 5;
  b.active = 1;
  t.is(p.pick('x')!.address, 'c:1');
  byAddress(p, 'c:1').active = 1;
  // b and c tie at 1: in turn.
  t.deepEqual(names([p.pick('x'), p.pick('x'), p.pick('x')]), ['b:1', 'c:1', 'b:1']);
  b.active = 2;
  t.is(p.pick('x')!.address, 'c:1');
});

test('source_hash: a client keeps its target; when one goes down only its clients move', (t) => {
  const { pool: p } = pool('source_hash', ['a:1', 'b:1', 'c:1', 'd:1']);
  const clients = Array.from({ length: 400 }, (_, i) => `10.0.${i >> 8}.${i & 255}`);
  const before = new Map(clients.map((ip) => [ip, p.pick(ip)!.address]));
  for (const ip of clients) t.is(p.pick(ip)!.address, before.get(ip)!, 'stable');
  const share = new Map<string, number>();
  for (const target of before.values()) share.set(target, (share.get(target) ?? 0) + 1);
  t.is(share.size, 4, 'every target gets clients');
  for (const n of share.values()) t.true(n > 40, `a fair share each: ${[...share.values()].join(', ')}`);

  p.connectFailed(byAddress(p, 'b:1'), 'refused');
  for (const ip of clients) {
    const now = p.pick(ip)!.address;
    if (before.get(ip) === 'b:1') t.not(now, 'b:1');
    else t.is(now, before.get(ip)!, 'clients of the other targets stay');
  }
  // A fresh pool (a restarted child) maps every client the same way.
  const again = pool('source_hash', ['a:1', 'b:1', 'c:1', 'd:1']).pool;
  for (const ip of clients) t.is(again.pick(ip)!.address, before.get(ip)!);
});

test('backups only while no regular target is up, balanced among themselves', (t) => {
  const { pool: p } = pool('round_robin', ['a:1', 'b:1', 'x:1!', 'y:1!']);
  t.deepEqual(names([p.pick('c'), p.pick('c'), p.pick('c')]), ['a:1', 'b:1', 'a:1']);
  p.connectFailed(byAddress(p, 'a:1'), 'refused');
  t.deepEqual(names([p.pick('c'), p.pick('c')]), ['b:1', 'b:1']);
  p.connectFailed(byAddress(p, 'b:1'), 'refused');
  t.deepEqual(names([p.pick('c'), p.pick('c'), p.pick('c')]), ['x:1', 'y:1', 'x:1']);
  p.checkPassed(byAddress(p, 'a:1'));
  p.checkPassed(byAddress(p, 'a:1'));
  t.is(p.pick('c')!.address, 'a:1', 'back to the regular target once it is up');
});

test('every target down: nothing to pick; exclude skips what a connection already tried', (t) => {
  const { pool: p, changes } = pool('round_robin', ['a:1', 'b:1!']);
  t.is(p.pick('c', new Set([byAddress(p, 'a:1')]))!.address, 'b:1', 'the backup, when the regular one was tried');
  t.is(p.pick('c', new Set(p.targets)), undefined);
  p.connectFailed(byAddress(p, 'a:1'), 'refused');
  p.connectFailed(byAddress(p, 'b:1'), 'timed out');
  t.is(p.pick('c'), undefined);
  t.false(p.anyUp);
  t.deepEqual(changes.map((c) => [c.target.address, c.up, c.anyUp]), [['a:1', false, true], ['b:1', false, false]]);
  t.is(changes[1]!.reason, 'timed out (a client connection failed)');
});

test('fall and rise: counted in a row; a pass resets the failures and vice versa', (t) => {
  const { pool: p, changes } = pool('round_robin', ['a:1', 'b:1'], { rise: 2, fall: 3 });
  const a = byAddress(p, 'a:1');
  p.checkPassed(a);
  p.checkFailed(a, 'refused');
  p.checkFailed(a, 'refused');
  p.checkPassed(a);
  p.checkFailed(a, 'refused');
  p.checkFailed(a, 'refused');
  t.true(a.up, 'never three in a row');
  p.checkFailed(a, 'connect ECONNREFUSED');
  t.false(a.up);
  t.is(changes.length, 1);
  t.is(changes[0]!.reason, 'connect ECONNREFUSED (3 failed health checks in a row)');
  p.checkPassed(a);
  p.checkFailed(a, 'refused');
  p.checkPassed(a);
  t.false(a.up, 'never two passes in a row');
  p.checkPassed(a);
  t.true(a.up);
  t.deepEqual(changes.map((c) => [c.up, c.reason]).slice(1), [[true, '2 health checks passed in a row']]);
});

test("a target's first check marks it down at once when it fails", (t) => {
  const { pool: p, changes } = pool('round_robin', ['a:1', 'b:1'], { fall: 3 });
  p.checkFailed(byAddress(p, 'a:1'), 'connect ECONNREFUSED');
  t.false(byAddress(p, 'a:1').up);
  t.is(changes[0]!.reason, 'connect ECONNREFUSED (health check)');
  p.checkPassed(byAddress(p, 'b:1'));
  p.checkFailed(byAddress(p, 'b:1'), 'refused');
  t.true(byAddress(p, 'b:1').up, 'after a first pass, fall applies');
});

test('states(): the gauge values by address; UDP pools skip unresolved targets', (t) => {
  const { pool: p } = pool('round_robin', ['a:1', 'b:1']);
  p.connectFailed(byAddress(p, 'b:1'), 'refused');
  t.deepEqual(p.states(), { 'a:1': 1, 'b:1': 0 });
  const udp = new TargetPool(targets('a:1', 'b:1'), { balance: 'round_robin', rise: 1, fall: 1, needsAddress: true });
  t.is(udp.pick('c'), undefined);
  udp.targets[1]!.resolved = { address: '127.0.0.1', family: 4 };
  t.is(udp.pick('c')!.address, 'b:1');
});

test('inherit(): targets a previous child saw down start down, without a reported change; unknown addresses are ignored', (t) => {
  const { pool: p, changes } = pool('round_robin', ['a:1', 'b:1', 'c:1!']);
  const down = p.inherit({ 'a:1': 0, 'b:1': 1, 'gone:1': 0 });
  t.deepEqual(names(down), ['a:1']);
  t.deepEqual(p.states(), { 'a:1': 0, 'b:1': 1, 'c:1': 1 });
  t.deepEqual(names([1, 2, 3].map(() => p.pick('192.0.2.1'))), ['b:1', 'b:1', 'b:1']);
  t.deepEqual(changes, [], 'not a transition');
});

test('inherit(): a target inherited down comes back after `rise` passed checks, like any down target', (t) => {
  const { pool: p, changes } = pool('round_robin', ['a:1', 'b:1'], { rise: 2 });
  p.inherit({ 'a:1': 0 });
  const a = byAddress(p, 'a:1');
  p.checkFailed(a, 'refused');
  t.false(a.up);
  t.deepEqual(changes, [], 'already down: a failed check changes nothing');
  p.checkPassed(a);
  t.false(a.up, 'one pass of two');
  p.checkPassed(a);
  t.true(a.up);
  t.deepEqual(changes.map((c) => [c.target.address, c.up, c.reason]), [['a:1', true, '2 health checks passed in a row']]);
});

test('inherit(): with every target inherited down, nothing is picked', (t) => {
  const { pool: p } = pool('least_connections', ['a:1', 'b:1!']);
  p.inherit({ 'a:1': 0, 'b:1': 0 });
  t.false(p.anyUp);
  t.is(p.pick('192.0.2.1'), undefined);
});
