/** The target resolver's cache, with a fake clock and a scripted lookup: no DNS, no waiting. */
import test from 'ava';
import { ResolveError, TargetResolver, type LookupAll, type ResolvedAddress } from '../../../src/proxy/target-resolver.js';

type Answer = readonly ResolvedAddress[] | string;

/** A lookup answering from `answers` (an error code string fails), on demand via `flush()`. */
function scripted(answers: Record<string, Answer>) {
  const calls: string[] = [];
  const waiting: Array<() => void> = [];
  const lookup: LookupAll = (host, callback) => {
    calls.push(host);
    waiting.push(() => {
      const answer = answers[host] ?? 'ENOTFOUND';
      if (typeof answer === 'string') callback(Object.assign(new Error(answer), { code: answer }), []);
      else callback(null, answer);
    });
  };
  const flush = () => {
    for (const answer of waiting.splice(0)) answer();
  };
  return { calls, lookup, flush };
}

const V4: readonly ResolvedAddress[] = [{ address: '192.0.2.10', family: 4 }];
const V6: readonly ResolvedAddress[] = [{ address: '2001:db8::10', family: 6 }];

test('IP literals are answered without a lookup', (t) => {
  const dns = scripted({});
  const resolver = new TargetResolver({ lookup: dns.lookup });
  t.deepEqual(resolver.peek('10.1.2.3'), [{ address: '10.1.2.3', family: 4 }]);
  t.deepEqual(resolver.peek('::1'), [{ address: '::1', family: 6 }]);
  t.deepEqual(dns.calls, []);
});

test('an answer is cached for its TTL, and concurrent lookups share one call', async (t) => {
  let now = 0;
  const dns = scripted({ 'db.example': [...V6, ...V4] });
  const resolver = new TargetResolver({ lookup: dns.lookup, now: () => now, ttlMs: 30_000 });
  t.is(resolver.peek('db.example'), undefined);
  const first = resolver.resolve('db.example');
  const second = resolver.resolve('db.example');
  dns.flush();
  t.deepEqual(await first, [...V6, ...V4], 'system order kept');
  t.deepEqual(await second, [...V6, ...V4]);
  now = 29_999;
  t.deepEqual(resolver.peek('db.example'), [...V6, ...V4]);
  t.deepEqual(await resolver.resolve('db.example'), [...V6, ...V4]);
  t.deepEqual(dns.calls, ['db.example']);
});

test('past its TTL an answer is served while one background lookup refreshes it', async (t) => {
  let now = 0;
  const answers: Record<string, Answer> = { 'api.example': V4 };
  const dns = scripted(answers);
  const resolver = new TargetResolver({ lookup: dns.lookup, now: () => now, ttlMs: 1000 });
  const first = resolver.resolve('api.example');
  dns.flush();
  await first;
  answers['api.example'] = V6;
  now = 1500;
  t.deepEqual(resolver.peek('api.example'), V4, 'stale answer, no waiting');
  t.deepEqual(resolver.peek('api.example'), V4);
  t.is(dns.calls.length, 2, 'one refresh');
  dns.flush();
  await Promise.resolve();
  t.deepEqual(resolver.peek('api.example'), V6);
  now = 10_000;
  t.is(resolver.peek('api.example'), undefined, 'too old to serve');
});

test('a failure is cached for the negative TTL', async (t) => {
  let now = 0;
  const answers: Record<string, Answer> = { 'new.example': 'ENOTFOUND' };
  const dns = scripted(answers);
  const resolver = new TargetResolver({ lookup: dns.lookup, now: () => now, negativeTtlMs: 5000 });
  const first = resolver.resolve('new.example');
  dns.flush();
  const err = await t.throwsAsync(first, { instanceOf: ResolveError });
  t.is(err?.code, 'ENOTFOUND');
  t.regex(err?.message ?? '', /cannot resolve new\.example: no such name/);
  now = 4999;
  await t.throwsAsync(resolver.resolve('new.example'), { instanceOf: ResolveError });
  t.is(dns.calls.length, 1);
  answers['new.example'] = V4;
  now = 5000;
  const again = resolver.resolve('new.example');
  dns.flush();
  t.deepEqual(await again, V4);
  t.is(dns.calls.length, 2);
});

test('a transient failure keeps the last good answer; a vanished name does not', async (t) => {
  let now = 0;
  const answers: Record<string, Answer> = { 'a.example': V4, 'b.example': V4 };
  const dns = scripted(answers);
  const resolver = new TargetResolver({ lookup: dns.lookup, now: () => now, ttlMs: 1000, negativeTtlMs: 100 });
  const warm = Promise.all([resolver.resolve('a.example'), resolver.resolve('b.example')]);
  dns.flush();
  await warm;
  answers['a.example'] = 'EAI_AGAIN';
  answers['b.example'] = 'ENOTFOUND';
  now = 1200;
  resolver.peek('a.example');
  resolver.peek('b.example');
  dns.flush();
  await Promise.resolve();
  await Promise.resolve();
  t.deepEqual(resolver.peek('a.example'), V4, 'resolver down: keep using the old address');
  t.is(resolver.peek('b.example'), undefined, 'name gone: forget it');
});

test('the cache is bounded', async (t) => {
  const answers: Record<string, Answer> = { 'one.example': V4, 'two.example': V4, 'three.example': V4 };
  const dns = scripted(answers);
  const resolver = new TargetResolver({ lookup: dns.lookup, now: () => 0, maxEntries: 2 });
  for (const host of Object.keys(answers)) {
    const pending = resolver.resolve(host);
    dns.flush();
    await pending;
  }
  t.is(resolver.peek('one.example'), undefined);
  t.deepEqual(resolver.peek('three.example'), V4);
});

test('the system lookup resolves localhost', async (t) => {
  const addresses = await new TargetResolver().resolve('localhost');
  t.true(addresses.length > 0);
  t.true(addresses.every((a) => a.family === 4 || a.family === 6));
});
