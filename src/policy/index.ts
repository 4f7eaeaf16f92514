/**
 * Policy: who may connect to a listener and how much they may use it. This module owns the
 * allowlist and denylist (with IPv4-mapped IPv6 clients matched as IPv4), the sliding windows and the
 * per-address rate limiter with its drop / throttle / log_only actions, bounded per-address state
 * and the snapshot that carries it across a reload. It is pure: no sockets, timers, IPC or log
 * sinks — decisions come back as data (verdicts, pause lengths) and the clock is injected, so it
 * runs in tests without waiting. It imports nothing from proxy/, supervisor/, ipc/ or the telemetry
 * sinks; only types from config/types.ts and telemetry/events.ts.
 */
export { normalizeAddress } from './address.js';
export { Allowlist } from './allowlist.js';
export { Denylist } from './denylist.js';
export { ListenerPolicy } from './listener-policy.js';
export {
  DEFAULT_MAX_ADDRESSES,
  MAX_SWEEP_SLICE,
  MIN_SWEEP_SLICE,
  RateLimiter,
  type AdmitVerdict,
  type Clock,
  type ConnectionTotal,
  type RateLimiterOptions,
  type SharedCounts,
  type SharedMode,
} from './rate-limiter.js';
export { DEFAULT_SUB_BUCKETS, SlidingWindow } from './sliding-window.js';
export type { AddressSnapshot, LimiterSnapshot, WindowEntry } from './snapshot.js';
export type { Ticket } from './ticket.js';
export {
  CONSUME_DROP,
  CONSUME_OK,
  CONSUME_VIOLATION,
  REFUSED,
  type LimitReason,
  type PolicyReason,
  type ReadLimit,
  type Refusal,
  type Verdict,
} from './verdict.js';
