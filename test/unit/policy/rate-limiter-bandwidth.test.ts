import test from 'ava';
import { limits, fakeClock, ticket } from './fixtures.js';
import {
  CONSUME_DROP,
  CONSUME_OK,
  CONSUME_VIOLATION,
  RateLimiter,
  type Ticket,
} from '../../../src/policy/index.js';

const MINUTE = 60_000;
const KB = 1024;
const MB = 1024 * KB;
const CHUNK = 64 * KB;

const A = '192.0.2.1';
const B = '192.0.2.2';

test('bandwidth is summed over all connections of an address, and drop ends the one that crosses the cap', (t) => {
  const limiter = new RateLimiter(limits({ max_bandwidth_per_ip: 1_000, bandwidth_window: MINUTE }), fakeClock().read);
  const first = ticket(limiter.admit(A));
  const second = ticket(limiter.admit(A));
  const other = ticket(limiter.admit(B));
  t.is(limiter.consume(first, 600), CONSUME_OK);
  t.is(limiter.consume(second, 300), CONSUME_OK);
  t.is(limiter.consume(second, 200), CONSUME_DROP);
  // The refused chunk was not counted: 100 more bytes still fit, exactly up to the cap.
  t.is(limiter.consume(first, 100), CONSUME_OK);
  t.is(limiter.consume(first, 1), CONSUME_DROP);
  t.is(limiter.consume(other, 1_000), CONSUME_OK);
});

test('drop: the quota comes back as the window slides', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter(limits({ max_bandwidth_per_ip: 1_000, bandwidth_window: MINUTE }), clock.read);
  const a = ticket(limiter.admit(A));
  t.is(limiter.consume(a, 500), CONSUME_OK);
  clock.now = 30_000;
  t.is(limiter.consume(a, 500), CONSUME_OK);
  t.is(limiter.consume(a, 1), CONSUME_DROP);
  // The first 500 bytes have left the window (plus a sub-bucket of slack); the second have not.
  clock.now = MINUTE + 3_000;
  t.is(limiter.consume(a, 500), CONSUME_OK);
  t.is(limiter.consume(a, 1), CONSUME_DROP);
});

test('drop cuts a 3 MB transfer under a 1 MB cap at the cap', (t) => {
  const limiter = new RateLimiter(limits({ max_bandwidth_per_ip: MB, bandwidth_window: MINUTE }), fakeClock().read);
  const a = ticket(limiter.admit(A));
  let moved = 0;
  while (moved < 3 * MB && limiter.consume(a, CHUNK) === CONSUME_OK) moved += CHUNK;
  t.is(moved, MB);
});

/** Runs one simulated TCP transfer of `chunk`-byte reads, pausing as told; returns bytes moved per ms bucket. */
function simulate(limiter: RateLimiter, clock: { now: number }, tickets: readonly Ticket[], until: number): { moved: number[]; pauses: number[]; violations: number } {
  const readyAt = tickets.map(() => clock.now);
  const moved = tickets.map(() => 0);
  const pauses: number[] = [];
  let violations = 0;
  for (;;) {
    // The connection whose pause ends first reads next, as an event loop would run it.
    let next = 0;
    for (let i = 1; i < tickets.length; i++) if (readyAt[i]! < readyAt[next]!) next = i;
    clock.now = readyAt[next]!;
    if (clock.now >= until) break;
    const answer = limiter.consume(tickets[next]!, CHUNK);
    if (answer === CONSUME_DROP) throw new Error('a throttled transfer must not be dropped');
    moved[next]! += CHUNK;
    if (answer === CONSUME_VIOLATION) violations++;
    if (answer > 0) {
      pauses.push(answer);
      readyAt[next] = clock.now + answer;
    }
  }
  return { moved, pauses, violations };
}

test('throttle: past the cap a long transfer moves about throttle_minimum per window', (t) => {
  const clock = fakeClock();
  const minimum = 128 * KB;
  const limiter = new RateLimiter(
    limits({ max_bandwidth_per_ip: MB, bandwidth_window: MINUTE, action: 'throttle', throttle_minimum: minimum }),
    clock.read,
  );
  const a = ticket(limiter.admit(A));
  const first = simulate(limiter, clock, [a], 10 * MINUTE);
  const second = simulate(limiter, clock, [a], 40 * MINUTE);
  // The first 1 MB passes at once, then the pace holds: 30 minutes at 128 KB a minute.
  t.true(first.moved[0]! >= MB + 9 * minimum && first.moved[0]! <= MB + 11 * minimum, `first 10 minutes: ${first.moved[0]}`);
  const perMinute = second.moved[0]! / 30;
  t.true(Math.abs(perMinute - minimum) <= 0.05 * minimum, `paced at ${perMinute} bytes a minute`);
  // Pauses, never a busy loop: each one is at least a millisecond, and they add up to the time spent.
  t.true(second.pauses.every((pause) => pause >= 1));
  const paused = second.pauses.reduce((sum, pause) => sum + pause, 0);
  t.true(Math.abs(paused - 30 * MINUTE) <= 2 * (CHUNK / minimum) * MINUTE, `paused ${paused} ms`);
  // Reported once per window while it lasts, not per chunk.
  t.true(first.violations >= 9 && first.violations <= 11, `violations: ${first.violations}`);
});

test('throttle: the pace is shared by all connections of an address, and others are not paced', (t) => {
  const clock = fakeClock();
  const minimum = 256 * KB;
  const limiter = new RateLimiter(
    limits({ max_bandwidth_per_ip: MB, bandwidth_window: MINUTE, action: 'throttle', throttle_minimum: minimum }),
    clock.read,
  );
  const mine = [ticket(limiter.admit(A)), ticket(limiter.admit(A)), ticket(limiter.admit(A))];
  simulate(limiter, clock, mine, 5 * MINUTE);
  const result = simulate(limiter, clock, mine, 25 * MINUTE);
  const total = result.moved.reduce((sum, bytes) => sum + bytes, 0);
  t.true(Math.abs(total / 20 - minimum) <= 0.05 * minimum, `three connections together: ${total / 20} bytes a minute`);
  // Fair enough: each got a share.
  for (const bytes of result.moved) t.true(bytes >= total / 6, `share ${bytes} of ${total}`);
  const other = ticket(limiter.admit(B));
  t.is(limiter.consume(other, CHUNK), CONSUME_OK);
});

test('throttle: an address that slowed down gets its full quota back', (t) => {
  const clock = fakeClock();
  const minimum = 64 * KB;
  const limiter = new RateLimiter(
    limits({ max_bandwidth_per_ip: MB, bandwidth_window: MINUTE, action: 'throttle', throttle_minimum: minimum }),
    clock.read,
  );
  const a = ticket(limiter.admit(A));
  simulate(limiter, clock, [a], 5 * MINUTE);
  t.true(limiter.consume(a, CHUNK) !== CONSUME_OK, 'still throttled while it keeps pushing');
  clock.now += MINUTE + 3_000;
  let free = 0;
  while (limiter.consume(a, CHUNK) === CONSUME_OK) free += CHUNK;
  t.is(free, MB);
});

test('throttle for datagrams: beyond the pace they are dropped, never delayed', (t) => {
  const clock = fakeClock();
  const minimum = 60 * KB;
  const limiter = new RateLimiter(
    limits({ max_bandwidth_per_ip: 600 * KB, bandwidth_window: MINUTE, action: 'throttle', throttle_minimum: minimum }),
    clock.read,
  );
  const session = ticket(limiter.admit(A));
  let forwarded = 0;
  let dropped = 0;
  // 1 KB datagrams every 10 ms (6 MB a minute offered) for 10 minutes.
  for (clock.now = 0; clock.now < 10 * MINUTE; clock.now += 10) {
    const answer = limiter.consumeDatagram(session, KB);
    t.true(answer === CONSUME_OK || answer === CONSUME_DROP || answer === CONSUME_VIOLATION);
    if (answer === CONSUME_DROP) dropped++;
    else forwarded += KB;
  }
  t.true(dropped > 0);
  const expected = 600 * KB + 10 * minimum;
  t.true(Math.abs(forwarded - expected) <= 0.05 * expected, `forwarded ${forwarded}, expected about ${expected}`);
});

/**
 * A request/response protocol under throttle: a client that retries every 10 ms until its request
 * is answered, far above the pace. Returns the bytes of completed exchanges in 10 minutes.
 */
function exchanges(request: number, reply: number): { exchanged: number; expected: number } {
  const clock = fakeClock();
  const minimum = 60 * KB;
  const limiter = new RateLimiter(
    limits({ max_bandwidth_per_ip: 600 * KB, bandwidth_window: MINUTE, action: 'throttle', throttle_minimum: minimum }),
    clock.read,
  );
  const session = ticket(limiter.admit(A));
  let exchanged = 0;
  for (clock.now = 0; clock.now < 10 * MINUTE; clock.now += 10) {
    if (limiter.consumeDatagram(session, request) === CONSUME_DROP) continue;
    if (limiter.consumeDatagram(session, reply, true) !== CONSUME_DROP) exchanged += request + reply;
  }
  return { exchanged, expected: 600 * KB + 10 * minimum };
}

// Regression: a request used to be let into debt, so the reply found the address in debt and was
// dropped nearly every time; exchanges then ran at a small fraction of the pace.
for (const [request, reply] of [[KB, 100], [100, KB], [KB, KB]] as const) {
  test(`throttle for datagrams: ${request}-byte requests with ${reply}-byte replies still exchange at about the pace`, (t) => {
    const { exchanged, expected } = exchanges(request, reply);
    t.true(exchanged >= 0.9 * expected, `exchanged ${exchanged}, expected about ${expected}`);
    t.true(exchanged <= 1.05 * expected, `exchanged ${exchanged}, more than the pace allows (${expected})`);
  });
}

test('throttle for datagrams: a target that streams is held to the pace too', (t) => {
  const clock = fakeClock();
  const minimum = 60 * KB;
  const limiter = new RateLimiter(
    limits({ max_bandwidth_per_ip: 600 * KB, bandwidth_window: MINUTE, action: 'throttle', throttle_minimum: minimum }),
    clock.read,
  );
  const session = ticket(limiter.admit(A));
  let forwarded = 0;
  for (clock.now = 0; clock.now < 10 * MINUTE; clock.now += 10) {
    if (limiter.consumeDatagram(session, KB, true) !== CONSUME_DROP) forwarded += KB;
  }
  const expected = 600 * KB + 10 * minimum;
  t.true(Math.abs(forwarded - expected) <= 0.05 * expected, `forwarded ${forwarded}, expected about ${expected}`);
});

test('throttle for datagrams: one larger than a burst still passes, at the pace', (t) => {
  const clock = fakeClock();
  // A burst is throttle_minimum / 20 = 3 KB: 8 KB datagrams need a full bucket.
  const minimum = 60 * KB;
  const limiter = new RateLimiter(
    limits({ max_bandwidth_per_ip: 600 * KB, bandwidth_window: MINUTE, action: 'throttle', throttle_minimum: minimum }),
    clock.read,
  );
  const session = ticket(limiter.admit(A));
  for (const fromTarget of [false, true]) {
    let forwarded = 0;
    const start = clock.now;
    for (; clock.now < start + 10 * MINUTE; clock.now += 10) {
      if (limiter.consumeDatagram(session, 8 * KB, fromTarget) !== CONSUME_DROP) forwarded += 8 * KB;
    }
    t.true(forwarded >= 5 * minimum, `${fromTarget ? 'target' : 'client'}: forwarded ${forwarded}`);
    t.true(forwarded <= 600 * KB + 11 * minimum, `${fromTarget ? 'target' : 'client'}: forwarded ${forwarded}`);
  }
});

test('log_only passes every byte and reports the violation once per window', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter(limits({ max_bandwidth_per_ip: MB, bandwidth_window: MINUTE, action: 'log_only' }), clock.read);
  const a = ticket(limiter.admit(A));
  const b = ticket(limiter.admit(A));
  const answers: number[] = [];
  for (let moved = 0; moved < 3 * MB; moved += CHUNK) answers.push(limiter.consume(moved % (2 * CHUNK) === 0 ? a : b, CHUNK));
  t.false(answers.includes(CONSUME_DROP));
  t.false(answers.some((answer) => answer > 0));
  t.is(answers.filter((answer) => answer === CONSUME_VIOLATION).length, 1);
  t.is(answers.indexOf(CONSUME_VIOLATION), MB / CHUNK, 'reported on the first chunk past the cap');
  clock.now += MINUTE;
  t.is(limiter.consume(a, CHUNK), CONSUME_VIOLATION);
  t.is(limiter.consume(a, CHUNK), CONSUME_OK);
  // A new connection over the cap is let in, with the violation reported when due.
  t.true(limiter.admit(A).allow);
});

test('drop for datagrams refuses those past the cap and counts only what passed', (t) => {
  const limiter = new RateLimiter(limits({ max_bandwidth_per_ip: 10 * KB, bandwidth_window: MINUTE }), fakeClock().read);
  const session = ticket(limiter.admit(A));
  let forwarded = 0;
  for (let i = 0; i < 100; i++) if (limiter.consumeDatagram(session, 1_500) === CONSUME_OK) forwarded += 1_500;
  t.is(forwarded, Math.floor((10 * KB) / 1_500) * 1_500);
  t.is(limiter.consumeDatagram(session, 10 * KB - forwarded), CONSUME_OK);
});

test('streamMeter(ticket) answers every chunk as consume(ticket, chunk) does, for each action', (t) => {
  for (const action of ['drop', 'throttle', 'log_only'] as const) {
    const settings = limits({ max_bandwidth_per_ip: 100 * KB, bandwidth_window: MINUTE, action, throttle_minimum: 10 * KB });
    const clock = fakeClock();
    const byCall = new RateLimiter(settings, clock.read);
    const byMeter = new RateLimiter(settings, clock.read);
    const called = ticket(byCall.admit(A));
    const meter = byMeter.streamMeter(ticket(byMeter.admit(A)));
    const seen = new Set<number>();
    for (let i = 0; i < 400; i++) {
      clock.now += (i * 7919) % 700;
      const bytes = 1 + ((i * 104_729) % (8 * KB));
      const expected = byCall.consume(called, bytes);
      seen.add(Math.sign(expected));
      t.is(meter(bytes), expected, `${action}, chunk ${i}`);
    }
    // Past the cap at some point: not only the OK answer was compared.
    t.true(seen.size > 1, `${action}: answers ${[...seen].join(', ')}`);
  }
});

test('streamMeter of an address without a bandwidth limit always says go on', (t) => {
  const limiter = new RateLimiter(limits({ max_connections_per_ip: 5 }), fakeClock().read);
  const meter = limiter.streamMeter(ticket(limiter.admit(A)));
  t.is(meter(10 * MB), CONSUME_OK);
});
