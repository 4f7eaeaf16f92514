/**
 * Counters a child accumulates on its hot path and flushes to the supervisor in batches.
 *
 * The hot path only increments plain number fields of one long-lived object: no allocation, no
 * IPC. `takeDelta()` (called by the child's flush timer, every ~200 ms and at exit) returns what
 * accumulated since the last call and resets the counters; the supervisor adds the deltas to its
 * prom-client metrics, so totals survive a child restart and never go down.
 */
import type { DenyReason } from './events.js';

/**
 * Upper bounds, in seconds, of the connection-duration histogram buckets. They reach hours because
 * SSH and database sessions last that long.
 */
export const DURATION_BUCKETS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400,
  43200, 86400,
];

/** Error kinds, used as the `type` label of packetpony_errors_total. */
export type ErrorType =
  | 'invalid_target'
  | 'target_connect'
  | 'target_resolve'
  | 'session_create'
  | 'target_write'
  | 'target_read'
  | 'client_write'
  | 'client_read'
  | 'timeout'
  | 'oversize_datagram'
  | 'accept'
  /** Every target of the listener was down: the client was refused at once. */
  | 'no_target'
  /** accept_proxy_protocol: a malformed header, or none within header_timeout. */
  | 'proxy_header'
  /** accept_proxy_protocol: a connection from an address outside `trusted`. */
  | 'proxy_untrusted';

/** Upper bounds, in seconds, of the shared-limits sync duration histogram. */
export const SYNC_BUCKETS: readonly number[] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** A shared listener's exchanges with its store since the last delta (shared limits). */
export interface SharedSyncDelta {
  /** 1 while the store answers, 0 while it does not (a level). */
  readonly up: number;
  readonly errors: number;
  /** Count per SYNC_BUCKETS index (non-cumulative), plus the overflow slot. */
  readonly counts: number[];
  readonly sum: number;
  readonly count: number;
}

export interface StatsDelta {
  accepted: number;
  acl_denied: number;
  rate_limited: number;
  /** Current number of open connections / sessions (a level, not a delta). */
  active: number;
  /** Client addresses whose rate-limit state the child keeps (a level; absent from older children). */
  tracked?: number;
  bytes_sent: number;
  bytes_received: number;
  packets_sent: number;
  packets_received: number;
  acl_drops: number;
  rate_limit_drops: Partial<Record<DenyReason, number>>;
  errors: Partial<Record<ErrorType, number>>;
  /** Count per DURATION_BUCKETS index (non-cumulative), plus one overflow slot at the end. */
  duration_counts: number[];
  duration_sum: number;
  duration_count: number;
  /** Up (1) or down (0) per target address, whole, when any changed (listeners with a target pool). */
  targets?: Record<string, number>;
  /** Shared listeners only: the store's state and the exchanges with it. */
  shared?: SharedSyncDelta;
}

export class ListenerStats {
  accepted = 0;
  aclDenied = 0;
  rateLimited = 0;
  active = 0;
  /** Set by the child after each sweep of its rate limiter. */
  tracked = 0;
  bytesSent = 0;
  bytesReceived = 0;
  packetsSent = 0;
  packetsReceived = 0;
  aclDrops = 0;
  /** Set (whole) when a target changes state; sent with the next delta, then null again. */
  targets: Record<string, number> | null = null;
  readonly #rateLimitDrops = new Map<DenyReason, number>();
  readonly #errors = new Map<ErrorType, number>();
  #durationCounts: number[] = new Array<number>(DURATION_BUCKETS.length + 1).fill(0);
  #durationSum = 0;
  #durationCount = 0;
  /** Shared listeners: the store answers (1) or not (0); -1 for a listener that shares nothing. */
  sharedUp = -1;
  #syncErrors = 0;
  #syncCounts: number[] | null = null;
  #syncSum = 0;
  #syncCount = 0;
  #reportedSharedUp = -1;
  /** The levels as last taken: a change of level alone is worth a report (the first always is). */
  #reportedActive = -1;
  #reportedTracked = 0;

  rateLimitDrop(reason: DenyReason): void {
    this.#rateLimitDrops.set(reason, (this.#rateLimitDrops.get(reason) ?? 0) + 1);
  }

  error(type: ErrorType): void {
    this.#errors.set(type, (this.#errors.get(type) ?? 0) + 1);
  }

  /** One exchange with the shared-limits store that took `seconds` (ok), or failed. */
  observeSync(seconds: number, ok: boolean): void {
    if (!ok) {
      this.#syncErrors++;
      return;
    }
    const counts = (this.#syncCounts ??= new Array<number>(SYNC_BUCKETS.length + 1).fill(0));
    let i = 0;
    while (i < SYNC_BUCKETS.length && seconds > SYNC_BUCKETS[i]!) i++;
    counts[i]!++;
    this.#syncSum += seconds;
    this.#syncCount++;
  }

  /** Records the duration of a finished connection or session, in seconds. */
  observeDuration(seconds: number): void {
    let i = 0;
    while (i < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[i]!) i++;
    this.#durationCounts[i]!++;
    this.#durationSum += seconds;
    this.#durationCount++;
  }

  /**
   * Bytes counted as they were relayed that never reached the peer: a connection cut by its
   * bandwidth cap was reset before its send queue drained (tcp-relay.ts). They are taken back so
   * that the byte counters say what was delivered, as the close event does. A counter cannot go
   * down, so when this delta holds fewer bytes than are taken back, the rest is taken from the
   * next ones (bytesSent and bytesReceived may be negative in between).
   */
  undelivered(sent: number, received: number): void {
    this.bytesSent -= sent;
    this.bytesReceived -= received;
  }

  /** Whether anything but the active level changed since the last delta. */
  get dirty(): boolean {
    return (
      this.accepted + this.aclDenied + this.rateLimited + this.packetsSent + this.packetsReceived +
        this.aclDrops + this.#durationCount !== 0 ||
      this.bytesSent > 0 ||
      this.bytesReceived > 0 ||
      this.#rateLimitDrops.size !== 0 ||
      this.#errors.size !== 0 ||
      this.targets !== null ||
      this.#syncErrors + this.#syncCount !== 0
    );
  }

  /** Whether a report would say anything new: a counter moved or a level changed. */
  get changed(): boolean {
    return this.dirty || this.active !== this.#reportedActive || this.tracked !== this.#reportedTracked || this.sharedUp !== this.#reportedSharedUp;
  }

  takeDelta(): StatsDelta {
    const delta: StatsDelta = {
      accepted: this.accepted,
      acl_denied: this.aclDenied,
      rate_limited: this.rateLimited,
      active: this.active,
      tracked: this.tracked,
      bytes_sent: this.bytesSent > 0 ? this.bytesSent : 0,
      bytes_received: this.bytesReceived > 0 ? this.bytesReceived : 0,
      packets_sent: this.packetsSent,
      packets_received: this.packetsReceived,
      acl_drops: this.aclDrops,
      rate_limit_drops: Object.fromEntries(this.#rateLimitDrops),
      errors: Object.fromEntries(this.#errors),
      duration_counts: this.#durationCounts,
      duration_sum: this.#durationSum,
      duration_count: this.#durationCount,
      ...(this.targets !== null ? { targets: this.targets } : {}),
      ...(this.sharedUp >= 0 ? { shared: this.#takeShared() } : {}),
    };
    this.targets = null;
    this.#reportedActive = this.active;
    this.#reportedTracked = this.tracked;
    this.accepted = this.aclDenied = this.rateLimited = 0;
    // What undelivered() took back beyond this delta stays owed (negative) to the next.
    this.bytesSent = this.bytesSent < 0 ? this.bytesSent : 0;
    this.bytesReceived = this.bytesReceived < 0 ? this.bytesReceived : 0;
    this.packetsSent = this.packetsReceived = 0;
    this.aclDrops = 0;
    this.#rateLimitDrops.clear();
    this.#errors.clear();
    this.#durationCounts = new Array<number>(DURATION_BUCKETS.length + 1).fill(0);
    this.#durationSum = 0;
    this.#durationCount = 0;
    return delta;
  }

  #takeShared(): SharedSyncDelta {
    const delta: SharedSyncDelta = {
      up: this.sharedUp,
      errors: this.#syncErrors,
      counts: this.#syncCounts ?? new Array<number>(SYNC_BUCKETS.length + 1).fill(0),
      sum: this.#syncSum,
      count: this.#syncCount,
    };
    this.#reportedSharedUp = this.sharedUp;
    this.#syncErrors = this.#syncSum = this.#syncCount = 0;
    this.#syncCounts = null;
    return delta;
  }
}
