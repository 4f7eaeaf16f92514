/**
 * A listener's RateLimits checked and turned, once, into the figures the per-chunk path needs.
 */
import type { RateLimits } from '../config/types.js';
import { DEFAULT_SUB_BUCKETS } from './sliding-window.js';
import type { LimitReason } from './verdict.js';

/** Admission checks limits in this order; the first one broken names the refusal. */
export const LIMIT_REASONS: readonly LimitReason[] = ['attempt_limit', 'connection_limit', 'bandwidth_limit', 'total_limit'];
export const ATTEMPT = 0;
export const CONNECTION = 1;
export const BANDWIDTH = 2;
export const TOTAL = 3;

/**
 * A throttled connection reads about this often: each read takes what the pace allows in that
 * time, so bytes flow in small steady steps rather than in large chunks with long pauses between.
 */
export const PACE_TICK_MS = 100;
/** The least a paced read takes, so that very slow paces do not cost a wake-up per few bytes. */
export const MIN_PACED_READ = 256;

/** How often a log_only violation of a limit without a window of its own may be reported. */
const DEFAULT_QUIET_PERIOD = 60_000;

export interface LimitSettings {
  readonly limits: RateLimits;
  /** Whether any per-address limit is on; if not, no per-address state is kept at all. */
  readonly perAddress: boolean;
  readonly subBuckets: number;
  /** Throttle pace in bytes per ms: throttle_minimum per bandwidth_window. */
  readonly paceRate: number;
  /** Bytes a throttled address may send at once after being quiet: one sub-bucket of pace. */
  readonly paceBurst: number;
  /** The most one read of a throttled TCP connection takes: PACE_TICK_MS of pace. */
  readonly paceRead: number;
  /** Window usage at or under which a throttled address gets its full quota back. */
  readonly paceExitLevel: number;
  /** Per reason (LIMIT_REASONS order), the least time between two reports for one address. */
  readonly quietPeriods: readonly number[];
}

export function limitSettings(limits: RateLimits, subBuckets = DEFAULT_SUB_BUCKETS): LimitSettings {
  // The config layer rejects all of these; meeting one here is a bug upstream, not a user error.
  if (limits.max_connection_attempts_per_ip > 0 && !(limits.attempts_window > 0)) {
    throw new RangeError('max_connection_attempts_per_ip needs a positive attempts_window');
  }
  const bandwidthCap = limits.max_bandwidth_per_ip;
  if (bandwidthCap > 0 && !(limits.bandwidth_window > 0)) {
    throw new RangeError('max_bandwidth_per_ip needs a positive bandwidth_window');
  }
  const pacing = limits.action === 'throttle' && bandwidthCap > 0;
  if (pacing && !(limits.throttle_minimum > 0)) {
    throw new RangeError('action throttle needs a positive throttle_minimum');
  }
  const orDefault = (period: number): number => (period > 0 ? period : DEFAULT_QUIET_PERIOD);
  return Object.freeze({
    limits,
    perAddress: limits.max_connections_per_ip > 0 || limits.max_connection_attempts_per_ip > 0 || bandwidthCap > 0,
    subBuckets,
    paceRate: pacing ? limits.throttle_minimum / limits.bandwidth_window : 0,
    paceBurst: pacing ? limits.throttle_minimum / subBuckets : 0,
    paceRead: pacing ? Math.max(MIN_PACED_READ, Math.floor((limits.throttle_minimum / limits.bandwidth_window) * PACE_TICK_MS)) : 0,
    // Hysteresis: an address paced at throttle_minimum per window keeps its usage near that level,
    // so leaving the throttle at the cap would hand back a full quota every window and make the
    // long-run rate the cap again. Under half the pace, the client really slowed down.
    paceExitLevel: pacing ? Math.min(limits.throttle_minimum, bandwidthCap) / 2 : 0,
    quietPeriods: Object.freeze([
      orDefault(limits.attempts_window),
      orDefault(limits.connections_window),
      orDefault(limits.bandwidth_window),
      orDefault(limits.connections_window),
    ]),
  });
}
