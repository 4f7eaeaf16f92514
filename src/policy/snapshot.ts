/**
 * Rate-limiter state as plain JSON, so a listener's next child (live reload) continues with the
 * previous child's windows and clients do not get fresh quotas. Times are ages relative to the
 * moment of the snapshot, never clock readings: each process has its own monotonic clock.
 */
import type { WindowEntry } from './sliding-window.js';
import type { LimitReason } from './verdict.js';

export type { WindowEntry };

export interface AddressSnapshot {
  readonly address: string;
  /** Connections open at snapshot time (the restoring limiter inherits them). */
  readonly open: number;
  readonly attempts?: readonly WindowEntry[];
  readonly bandwidth?: readonly WindowEntry[];
  /** Present while the address is throttled: its pacing balance in bytes (negative: debt). */
  readonly throttle_tokens?: number;
  /** Per reason, ms left before a violation may be reported again. */
  readonly quiet?: { readonly [R in LimitReason]?: number };
}

export interface LimiterSnapshot {
  readonly version: 1;
  readonly addresses: readonly AddressSnapshot[];
  /** Open connections not attributed to an address (no per-address limit, or over the ceiling). */
  readonly untracked_open: number;
}
