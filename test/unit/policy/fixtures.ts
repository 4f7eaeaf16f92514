/** Shared pieces of the limiter tests: limits with everything off, a fake clock, admissions. */
import type { RateLimits } from '../../../src/config/types.js';
import type { AdmitVerdict, Ticket } from '../../../src/policy/index.js';

export const OFF: RateLimits = {
  max_connections_per_ip: 0,
  connections_window: 0,
  max_connection_attempts_per_ip: 0,
  attempts_window: 0,
  max_bandwidth_per_ip: 0,
  bandwidth_window: 0,
  max_total_connections: 0,
  action: 'drop',
  throttle_minimum: 0,
};

export function limits(overrides: Partial<RateLimits>): RateLimits {
  return { ...OFF, ...overrides };
}

/** A clock the test moves by hand: `clock.now += 1000`. */
export function fakeClock(now = 0): { now: number; read: () => number } {
  const clock = { now, read: () => clock.now };
  return clock;
}

export function ticket(verdict: AdmitVerdict): Ticket {
  if (!verdict.allow) throw new Error(`expected an admission, got ${verdict.reason}`);
  return verdict;
}
