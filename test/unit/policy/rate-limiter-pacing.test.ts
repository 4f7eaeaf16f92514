/**
 * The shape of a throttled TCP transfer (issue 21.3), with the clock injected: reads sized by
 * streamReadLimit() as the relay sizes them, pauses taken as consume() answers. Past the cap the
 * bytes must flow in small steady steps at throttle_minimum per bandwidth_window, not in large
 * chunks with pauses of seconds between.
 */
import test from 'ava';
import { limits, fakeClock, ticket } from './fixtures.js';
import { CONSUME_DROP, CONSUME_OK, CONSUME_VIOLATION, RateLimiter, type Ticket } from '../../../src/policy/index.js';
import { MIN_PACED_READ, PACE_TICK_MS } from '../../../src/policy/limit-settings.js';

const KB = 1024;
const MB = 1024 * KB;
/** The relay's large read buffer: no read takes more. */
const BUFFER = 64 * KB;
const A = '192.0.2.1';

/** 1 MB per 10 s, then 200 KB per 10 s: 20.48 bytes a millisecond. */
const PACED = limits({ max_bandwidth_per_ip: MB, bandwidth_window: 10_000, action: 'throttle', throttle_minimum: 200 * KB });
const PACE = (200 * KB) / 10_000;

interface Read {
  readonly at: number;
  readonly connection: number;
  readonly bytes: number;
}

/**
 * Runs `connections` transfers of one address that always have data, as the relay would: a read's
 * size is granted when the previous read has been metered (all the first ones at once, before any
 * read: the case where grants overlap), the read takes all of it when it comes, and its grant goes
 * back before its bytes are metered; a violation's
 * pause comes from consume(0), as the listener asks for it; a pause defers that connection's next
 * read. Every read until `until` is returned.
 */
function transfer(limiter: RateLimiter, clock: { now: number }, connections: number, until: number): Read[] {
  const tickets: Ticket[] = [];
  for (let i = 0; i < connections; i++) tickets.push(ticket(limiter.admit(A)));
  const readLimits = tickets.map((one) => limiter.streamReadLimit(one)!);
  const granted = readLimits.map((readLimit) => readLimit(BUFFER, 0));
  const readyAt = tickets.map(() => clock.now);
  const reads: Read[] = [];
  for (;;) {
    let next = 0;
    for (let i = 1; i < connections; i++) if (readyAt[i]! < readyAt[next]!) next = i;
    clock.now = readyAt[next]!;
    if (clock.now >= until) return reads;
    const bytes = granted[next]!;
    readLimits[next]!(0, bytes);
    let answer = limiter.consume(tickets[next]!, bytes);
    if (answer === CONSUME_DROP) throw new Error('a throttled transfer is never dropped');
    if (answer === CONSUME_VIOLATION) answer = limiter.consume(tickets[next]!, 0);
    reads.push({ at: clock.now, connection: next, bytes });
    granted[next] = readLimits[next]!(BUFFER, 0);
    if (answer > 0) readyAt[next] = clock.now + answer;
  }
}

function bytesIn(reads: readonly Read[], from: number, to: number): number {
  return reads.reduce((sum, read) => (read.at >= from && read.at < to ? sum + read.bytes : sum), 0);
}

test('a paced read is what the pace allows in a tick; never less than MIN_PACED_READ', (t) => {
  const limiter = new RateLimiter(PACED, fakeClock().read);
  const a = ticket(limiter.admit(A));
  const readLimit = limiter.streamReadLimit(a)!;
  t.is(readLimit(2 * MB, 0), MB, 'not paced: what is left of the cap');
  t.is(readLimit(BUFFER, MB), BUFFER, 'no more than the buffer holds');
  t.is(readLimit(0, BUFFER), 0, 'the read is done: its grant goes back before it is metered');
  t.is(limiter.consume(a, MB - 1000), CONSUME_OK);
  t.is(readLimit(BUFFER, 0), Math.floor(PACE * PACE_TICK_MS), 'less left than a paced read: a paced read');
  const slow = new RateLimiter(limits({ ...PACED, throttle_minimum: 1 * KB, bandwidth_window: 60_000 }), fakeClock().read);
  t.is(slow.streamReadLimit(ticket(slow.admit(A)))!(2 * MB, 0), MB);
  const slowTicket = ticket(slow.admit(A));
  slow.consume(slowTicket, MB);
  t.is(slow.streamReadLimit(slowTicket)!(BUFFER, 0), MIN_PACED_READ, '1 KB a minute: reads of MIN_PACED_READ');
});

test('grants still out count against the cap: two connections sized before either reads share what is left', (t) => {
  const limiter = new RateLimiter(PACED, fakeClock().read);
  const [a, b] = [ticket(limiter.admit(A)), ticket(limiter.admit(A))];
  const [readA, readB] = [limiter.streamReadLimit(a)!, limiter.streamReadLimit(b)!];
  const paced = Math.floor(PACE * PACE_TICK_MS);
  t.is(limiter.consume(a, MB - 300 * KB), CONSUME_OK);
  const grantA = readA(MB, 0);
  const grantB = readB(MB, 0);
  t.is(grantA, 300 * KB, 'the first reader: all that is left');
  t.is(grantB, paced, 'the second, while that grant is out: a paced read');
  t.is(readB(MB, grantB), paced, 'asking again gives its own grant back first');
  // A's read takes its grant: with B's grant still out, that starts the pacing (reported once)…
  t.is(readA(0, grantA), 0);
  t.is(limiter.consume(a, grantA), CONSUME_VIOLATION, 'the read that reached the cap less what B holds');
  // …and B's read, granted before, is paced: the cap is crossed by that one paced read.
  t.is(readB(0, paced), 0);
  t.is(limiter.consume(b, paced), Math.ceil((grantA + paced) / PACE), 'B owes its pause');
  t.is(readA(MB, 0), paced, 'paced from then on');
  // A closed connection's grant given back is what is left to the others again.
  const c = ticket(limiter.admit('192.0.2.9'));
  const readC = limiter.streamReadLimit(c)!;
  const grantC = readC(MB, 0);
  t.is(grantC, MB);
  t.is(readC(0, grantC), 0);
  t.is(readC(MB, 0), MB, 'nothing held once given back');
});

test('three connections whose first reads are all sized at once cross the cap by at most a paced read each', (t) => {
  const clock = fakeClock();
  const reads = transfer(new RateLimiter(PACED, clock.read), clock, 3, 1);
  const atOnce = bytesIn(reads, 0, 1);
  t.true(atOnce >= MB && atOnce <= MB + 3 * PACE * PACE_TICK_MS, `${atOnce} bytes before pacing began`);
});

test('only a throttling listener limits reads', (t) => {
  for (const action of ['drop', 'log_only'] as const) {
    const limiter = new RateLimiter(limits({ ...PACED, action }), fakeClock().read);
    t.is(limiter.streamReadLimit(ticket(limiter.admit(A))), undefined, action);
  }
  const unmetered = new RateLimiter(limits({ max_connections_per_ip: 3, action: 'throttle', throttle_minimum: KB }), fakeClock().read);
  t.is(unmetered.streamReadLimit(ticket(unmetered.admit(A))), undefined, 'no bandwidth cap');
});

test('past the cap one connection reads a tick of pace every tick: steady, at the pace, the cap crossed by one small read', (t) => {
  const clock = fakeClock();
  const reads = transfer(new RateLimiter(PACED, clock.read), clock, 1, 60_000);
  // Everything up to the cap moves at once (time 0); what follows is paced.
  const atOnce = bytesIn(reads, 0, 1);
  t.true(atOnce >= MB && atOnce <= MB + PACE * PACE_TICK_MS, `${atOnce} bytes before pacing began`);
  const paced = reads.filter((read) => read.at > 0);
  const gaps = paced.map((read, i) => read.at - (i === 0 ? 0 : paced[i - 1]!.at));
  t.true(Math.max(...gaps) <= 2 * PACE_TICK_MS, `longest gap ${Math.max(...gaps)} ms`);
  t.true(gaps.filter((gap) => gap > PACE_TICK_MS + 1).length <= 6, 'a longer gap only where a violation was reported (once a window)');
  t.true(paced.every((read) => read.bytes <= PACE * PACE_TICK_MS), 'no large read');
  for (let from = 1; from + 2000 <= 60_000; from += 500) {
    const pace = bytesIn(paced, from, from + 2000) / 2000;
    t.true(Math.abs(pace - PACE) <= 0.1 * PACE, `${pace.toFixed(2)} bytes/ms over [${from}, ${from + 2000})`);
  }
});

test('several connections of one address share the pace, each in turn', (t) => {
  const clock = fakeClock();
  const reads = transfer(new RateLimiter(PACED, clock.read), clock, 3, 60_000);
  const paced = reads.filter((read) => read.at > 0);
  const pace = bytesIn(paced, 10_000, 60_000) / 50_000;
  t.true(Math.abs(pace - PACE) <= 0.05 * PACE, `together ${pace.toFixed(2)} bytes/ms`);
  for (let connection = 0; connection < 3; connection++) {
    const mine = paced.filter((read) => read.connection === connection && read.at >= 10_000);
    const share = mine.reduce((sum, read) => sum + read.bytes, 0) / 50_000;
    t.true(share >= PACE / 4 && share <= PACE / 2, `connection ${connection}: ${share.toFixed(2)} bytes/ms`);
    const longest = Math.max(...mine.map((read, i) => (i === 0 ? 0 : read.at - mine[i - 1]!.at)));
    t.true(longest <= 3 * 2 * PACE_TICK_MS, `connection ${connection}: longest gap ${longest} ms`);
  }
});

test('a violation is reported once a window, and the pause it carries is not lost: consume(0) answers it', (t) => {
  const clock = fakeClock();
  const limiter = new RateLimiter(PACED, clock.read);
  const a = ticket(limiter.admit(A));
  t.is(limiter.consume(a, MB), CONSUME_OK);
  t.is(limiter.consume(a, 2048), CONSUME_VIOLATION, 'the read that crossed the cap');
  t.is(limiter.consume(a, 0), Math.ceil(2048 / PACE), 'its pause');
  t.is(limiter.consume(a, 2048), Math.ceil(4096 / PACE), 'the next read owes its own on top');
});
