/**
 * One listener's rate limits (ORIGINAL.md "Rate limits — ours"):
 *
 * - max_connections_per_ip: connections open at once per address, released the moment one closes.
 * - max_connection_attempts_per_ip per attempts_window: every admit() counts, refused ones
 *   included, so a client that keeps hammering stays blocked. The allowlist runs first: denied
 *   clients never get here and cost no quota.
 * - max_bandwidth_per_ip per bandwidth_window: bytes both ways over all the address's connections.
 * - max_total_connections: connections open at once on the listener.
 *
 * Refused connections take no concurrency quota; admitted ones hold it until release().
 *
 * action drop: a new connection over any limit is refused; a chunk that would take the address
 * past its bandwidth cap is refused and its transfer ends. action throttle: the count limits still
 * refuse — there is no slower way to open a connection — while bandwidth past the cap is paced to
 * throttle_minimum per bandwidth_window, shared by the address's connections; consume() answers
 * with the pause the caller must take before reading again, streamReadLimit() with how much the
 * next read may take (a tenth of a second of pace), and the address stays paced until it has
 * really slowed down (see AddressState#pace). action log_only: nothing is refused or
 * paced; verdicts name the limit broken, at most once per address per window per reason.
 *
 * Shared limits (options.shared): a fleet of hosts counts each address together. Decisions stay
 * local; the caller (src/fleet) exchanges counts with a store every interval: collectShared()
 * gives this host's own counts of the addresses that changed (and, a slice at a time, of the rest,
 * as windows slide), applyPeers() the rest of the fleet's, which the limits then add to this
 * host's own (attempts, bytes, open connections; max_total_connections stays per host). Pacing
 * stays per host. setSharedMode() says what to do while the store is unreachable.
 *
 * State is bounded: an address's entry goes when it has no open connection and its windows are
 * empty (release() drops it at once when it can, sweep() finds the rest a slice at a time), and at
 * most `maxAddresses` are tracked. At that ceiling a new address is refused with 'attempt_limit'
 * (log_only: admitted, untracked) — see #overCeiling for why.
 *
 * Why one file of ~480 lines: every part (admission, meters, sweep, snapshot, the shared sync)
 * works on the same private table of AddressStates and its ceiling; the per-address arithmetic
 * already lives apart (address-state.ts, sliding-window.ts, limit-settings.ts), and cutting the
 * rest would mean exposing the table to its neighbours.
 */
import type { RateLimits } from '../config/types.js';
import { AddressState } from './address-state.js';
import { ATTEMPT, BANDWIDTH, CONNECTION, LIMIT_REASONS, TOTAL, limitSettings, type LimitSettings } from './limit-settings.js';
import { DEFAULT_SUB_BUCKETS } from './sliding-window.js';
import type { AddressSnapshot, LimiterSnapshot } from './snapshot.js';
import { kLive, kState, Ticket } from './ticket.js';
import { CONSUME_OK, REFUSED, type LimitReason, type ReadLimit, type Refusal } from './verdict.js';

/**
 * Milliseconds, never going back: `() => performance.now()` in production, a variable in tests.
 * Only differences between readings matter, so every process may have its own origin.
 */
export type Clock = () => number;

export interface RateLimiterOptions {
  /** Most addresses tracked at once; DEFAULT_MAX_ADDRESSES when absent. */
  readonly maxAddresses?: number;
  /** Sub-buckets per sliding window; DEFAULT_SUB_BUCKETS (edges sharp to 5 %) when absent. */
  readonly subBuckets?: number;
  /**
   * Shared limits: the counts of other hosts are added to this one's (applyPeers), and changed
   * addresses are collected for the store (collectShared); see "Shared limits" in the header.
   */
  readonly shared?: boolean;
  /**
   * A listener with several workers: max_total_connections counted across all of them (the
   * child passes src/native/connection-total.ts in). Without it the limiter counts alone.
   */
  readonly total?: ConnectionTotal;
}

/**
 * The listener's open connections counted beyond this process. acquire(max) counts one more if the
 * total is under max (0: always) and says whether it did; release() counts one less.
 */
export interface ConnectionTotal {
  acquire(max: number): boolean;
  release(): void;
}

/**
 * With shared limits, how the limiter decides. `shared`: its own counts plus the fleet's as last
 * heard. While the store is unreachable (shared_limits.on_store_down): `local`, its own counts
 * only; `open`, every new connection is admitted (still counted, to be merged back); `closed`,
 * every new connection is refused as 'store_down'.
 */
export type SharedMode = 'shared' | 'local' | 'open' | 'closed';

/** One address's own counts, for the store; `address` is the normalised client address. */
export interface SharedCounts {
  readonly address: string;
  readonly attempts: number;
  readonly bytes: number;
  readonly open: number;
}

/** At about 0.8 KB per address with both windows on, this bounds the state near 80 MB. */
export const DEFAULT_MAX_ADDRESSES = 100_000;
/**
 * Entries sweep() looks at per call when not told: a tenth of the table, so that a pass over it
 * takes ten calls (ten seconds on the child's timer) and the memory of a flood of addresses is free
 * again soon after its windows pass; at least MIN, and at most MAX (measured: 0.2–0.4 µs an entry
 * once warm, so the largest slice stalls the event loop for a few milliseconds once a second).
 */
export const MIN_SWEEP_SLICE = 1_000;
export const MAX_SWEEP_SLICE = 10_000;
/** Entries looked at to make room when a new address meets the ceiling: bounded per admit(). */
const CEILING_RECLAIM_SLICE = 32;

export type AdmitVerdict = Ticket | Refusal<LimitReason | 'store_down'>;

function nonNegativeCount(value: number): number {
  return Number.isFinite(value) && value > 0 ? Math.floor(value) : 0;
}

export class RateLimiter {
  readonly #settings: LimitSettings;
  readonly #clock: Clock;
  readonly #maxAddresses: number;
  readonly #states = new Map<string, AddressState>();
  /** Connections of addresses without a state of their own (no per-address limit, or the ceiling). */
  readonly #untracked = AddressState.untracked();
  #open = 0;
  #inherited = 0;
  #sweepCursor: Iterator<AddressState> | undefined;
  /** The table's size when the current pass began: sweep()'s slice is a tenth of it. */
  #passSize = 0;
  /** Shared limits: addresses whose counts changed since collectShared() last ran; else null. */
  readonly #changed: AddressState[] | null;
  /** Shared limits: addresses forgotten while the store still holds counts of theirs. */
  #forgotten: string[] = [];
  #refreshCursor: Iterator<AddressState> | undefined;
  #mode: SharedMode = 'shared';
  readonly #total: ConnectionTotal | null;

  constructor(limits: RateLimits, clock: Clock, options: RateLimiterOptions = {}) {
    const maxAddresses = options.maxAddresses ?? DEFAULT_MAX_ADDRESSES;
    if (!(Number.isInteger(maxAddresses) && maxAddresses >= 1)) throw new RangeError(`maxAddresses must be a positive integer, got ${maxAddresses}`);
    this.#settings = limitSettings(limits, options.subBuckets ?? DEFAULT_SUB_BUCKETS);
    this.#clock = clock;
    this.#maxAddresses = maxAddresses;
    this.#changed = options.shared === true ? [] : null;
    this.#total = options.total ?? null;
  }

  /**
   * A limiter that continues `snapshot` (taken by another process, possibly under other limits):
   * windows keep their events by age, and the snapshot's open connections are inherited — they
   * count against the limits until releaseInherited() or clearInherited() says they closed. The
   * time between snapshot and restore is not known here and counts as zero, which errs on the
   * strict side: events expire that much later.
   */
  static restore(limits: RateLimits, clock: Clock, snapshot: LimiterSnapshot, options: RateLimiterOptions = {}): RateLimiter {
    if (snapshot.version !== 1) throw new TypeError(`unsupported rate limiter snapshot version ${String(snapshot.version)}`);
    const limiter = new RateLimiter(limits, clock, options);
    limiter.#load(snapshot);
    return limiter;
  }

  /** Addresses with state kept; bounded by maxAddresses. */
  get trackedAddresses(): number {
    return this.#states.size;
  }

  /** Connections counted against max_total_connections, inherited ones included. */
  get openConnections(): number {
    return this.#open + this.#inherited;
  }

  /**
   * A new connection or UDP session from `address` (normalised, already through the allowlist).
   * Counts the attempt, then checks the limits in LIMIT_REASONS order.
   */
  admit(address: string): AdmitVerdict {
    const settings = this.#settings;
    let state = this.#untracked;
    let now = 0;
    if (settings.perAddress) {
      now = this.#clock();
      const known = this.#states.get(address);
      if (known !== undefined) {
        state = known;
      } else {
        if (this.#states.size >= this.#maxAddresses && !this.#reclaim(now)) return this.#overCeiling(address, now);
        state = AddressState.create(address, settings, this.#changed);
        this.#states.set(address, state);
      }
    }

    let broken = this.#brokenLimits(state, now);
    let violation: LimitReason | undefined;
    const mode = this.#mode;
    if (mode === 'closed' && this.#changed !== null) return REFUSED.store_down;
    const refuses = mode !== 'open' && settings.limits.action !== 'log_only';
    if (this.#total !== null) {
      // The total is the last limit checked: counted only for a connection that is admitted.
      if (broken !== 0 && refuses) return REFUSED[LIMIT_REASONS[firstBit(broken)]];
      if (!this.#total.acquire(settings.limits.max_total_connections)) {
        if (refuses) return REFUSED.total_limit;
        broken |= 1 << TOTAL;
        this.#total.acquire(0);
      }
    }
    if (broken !== 0 && mode !== 'open') {
      if (settings.limits.action !== 'log_only') return REFUSED[LIMIT_REASONS[firstBit(broken)]];
      violation = this.#reportable(state, broken, settings.perAddress ? now : this.#clock());
    }
    state.open++;
    this.#open++;
    state.touch();
    return new Ticket(address, state, violation);
  }

  /** The connection or session closed. Idempotent per ticket. */
  release(ticket: Ticket): void {
    if (!ticket[kLive]) return;
    ticket[kLive] = false;
    const state = ticket[kState];
    state.open--;
    this.#open--;
    this.#total?.release();
    state.touch();
    if (state.open === 0 && state.inherited === 0 && this.#states.get(state.address) === state
      && state.isIdle(this.#clock(), this.#settings)) {
      this.#forget(state);
    }
  }

  // ---- shared limits ------------------------------------------------------------------------

  /** How decisions are made (SharedMode); leaving 'shared' forgets what the fleet counted. */
  setSharedMode(mode: SharedMode): void {
    if (mode === this.#mode) return;
    this.#mode = mode;
    if (mode === 'shared') return;
    for (const state of this.#states.values()) state.peerAttempts = state.peerBytes = state.peerOpen = 0;
  }

  get sharedMode(): SharedMode {
    return this.#mode;
  }

  /**
   * The counts to send to the store now: every address that changed since the last call, then
   * addresses not sent since `refreshBefore` (clock ms: their windows slide, and the fleet's counts
   * of them are to be heard again), then the addresses forgotten meanwhile (as zeros, which take
   * their counts out of the store) — at most `max` in all; the rest wait for the next call.
   */
  collectShared(max: number, refreshBefore: number): SharedCounts[] {
    const changed = this.#changed;
    if (changed === null) return [];
    const now = this.#clock();
    const out: SharedCounts[] = [];
    const take = (state: AddressState): void => {
      const counts = state.ownCounts(now);
      state.syncDirty = false;
      state.syncedAt = now;
      state.syncedNonZero = counts.attempts + counts.bytes + counts.open > 0;
      out.push({ address: state.address, ...counts });
    };
    let used = 0;
    for (; used < changed.length && out.length < max; used++) {
      const state = changed[used]!;
      // A state replaced or dropped since it changed is not the address's any more.
      if (this.#states.get(state.address) === state) take(state);
      else state.syncDirty = false;
    }
    changed.splice(0, used);
    while (out.length < max && this.#forgotten.length > 0) {
      const address = this.#forgotten.pop()!;
      if (!this.#states.has(address)) out.push({ address, attempts: 0, bytes: 0, open: 0 });
    }
    // The refresh, carrying on where the last call stopped: one pass over the table at most.
    let cursor = this.#refreshCursor ?? this.#states.values();
    let restarted = this.#refreshCursor === undefined;
    let exhausted = false;
    while (out.length < max) {
      const next = cursor.next();
      if (next.done !== true) {
        const state = next.value;
        if (!state.syncDirty && state.syncedAt < refreshBefore) take(state);
      } else if (restarted) {
        exhausted = true;
        break;
      } else {
        cursor = this.#states.values();
        restarted = true;
      }
    }
    this.#refreshCursor = exhausted ? undefined : cursor;
    return out;
  }

  /** Counts collectShared() gave that never reached the store: they go with a later call. */
  returnShared(entries: readonly SharedCounts[]): void {
    for (const entry of entries) {
      const state = this.#states.get(entry.address);
      if (state === undefined) {
        if (entry.attempts + entry.bytes + entry.open === 0) this.#forgotten.push(entry.address);
        continue;
      }
      state.syncedAt = Number.NEGATIVE_INFINITY;
      state.touch();
    }
  }

  /** What the rest of the fleet counts for `address` (ignored unless the mode is 'shared'). */
  applyPeers(address: string, attempts: number, bytes: number, open: number): void {
    if (this.#mode !== 'shared' || this.#changed === null) return;
    const state = this.#states.get(address);
    if (state === undefined) return;
    state.peerAttempts = attempts > 0 ? attempts : 0;
    state.peerBytes = bytes > 0 ? bytes : 0;
    state.peerOpen = open > 0 ? open : 0;
  }

  /** Addresses waiting to go to the store (for tests and the sync's metrics). */
  get sharedBacklog(): number {
    return (this.#changed?.length ?? 0) + this.#forgotten.length;
  }

  /** Drops an idle state; with shared limits, the store's counts of it are taken back later. */
  #forget(state: AddressState): void {
    this.#states.delete(state.address);
    if (this.#changed !== null && state.syncedNonZero) this.#forgotten.push(state.address);
  }

  /**
   * `bytes` moved on a TCP connection, either way. CONSUME_OK, CONSUME_DROP (end the connection),
   * CONSUME_VIOLATION (go on, log) or a pause in ms before reading from this connection again.
   */
  consume(ticket: Ticket, bytes: number): number {
    const state = ticket[kState];
    return state.metered ? state.consume(this.#clock(), bytes, this.#settings, 'stream') : CONSUME_OK;
  }

  /**
   * consume(ticket, bytes) as a function of `bytes`, made once per connection: the address's state,
   * its window and the action are looked up here rather than on every chunk.
   */
  streamMeter(ticket: Ticket): (bytes: number) => number {
    const state = ticket[kState];
    return state.metered ? state.streamMeter(this.#clock, this.#settings) : () => CONSUME_OK;
  }

  /**
   * How much the next read of a TCP connection may take, as a function made once per connection and
   * called by each direction with its buffer's room and its previous grant; undefined unless the
   * listener throttles (then reads are never limited). See streamReadLimit in address-state.ts.
   */
  streamReadLimit(ticket: Ticket): ReadLimit | undefined {
    const state = ticket[kState];
    return state.metered && this.#settings.paceRate > 0 ? state.streamReadLimit(this.#clock, this.#settings) : undefined;
  }

  /**
   * One UDP datagram of `bytes`, from the client or, with `fromTarget`, from the target.
   * CONSUME_OK, CONSUME_DROP (drop this datagram; it was not counted) or CONSUME_VIOLATION (forward
   * it, log). Never a pause: a throttled address's datagrams beyond its pace are dropped instead,
   * since holding them would need a queue; which ones, see datagramFloor in address-state.ts.
   */
  consumeDatagram(ticket: Ticket, bytes: number, fromTarget = false): number {
    const state = ticket[kState];
    return state.metered ? state.consume(this.#clock(), bytes, this.#settings, fromTarget ? 'reply' : 'datagram') : CONSUME_OK;
  }

  /** An inherited connection of `address` (see restore) closed in the previous child. */
  releaseInherited(address: string): void {
    const state = this.#states.get(address);
    const holder = state !== undefined && state.inherited > 0 ? state : this.#untracked.inherited > 0 ? this.#untracked : undefined;
    if (holder === undefined) return;
    holder.inherited--;
    this.#inherited--;
  }

  /** The previous child is gone, and with it every inherited connection. */
  clearInherited(): void {
    for (const state of this.#states.values()) state.inherited = 0;
    this.#untracked.inherited = 0;
    this.#inherited = 0;
  }

  /**
   * Drops the state of addresses that no longer need it, looking at no more than `maxEntries`
   * entries (by default a tenth of the table as it was when the pass began, within
   * MIN_SWEEP_SLICE..MAX_SWEEP_SLICE), carrying on where the previous call stopped. Call it from a
   * timer, e.g. every second: no call stalls the event loop for long, and a full pass takes about
   * ten of them. Returns how many it dropped.
   */
  sweep(maxEntries?: number): number {
    if (this.#states.size === 0) {
      this.#sweepCursor = undefined;
      return 0;
    }
    const size = this.#sweepCursor === undefined ? this.#states.size : this.#passSize;
    return this.#sweepSlice(this.#clock(), maxEntries ?? Math.min(MAX_SWEEP_SLICE, Math.max(MIN_SWEEP_SLICE, Math.ceil(size / 10))));
  }

  /** Every address with something worth carrying over; JSON-serialisable. */
  snapshot(): LimiterSnapshot {
    const now = this.#clock();
    const settings = this.#settings;
    const addresses: AddressSnapshot[] = [];
    for (const state of this.#states.values()) {
      if (!state.isIdle(now, settings)) addresses.push(state.snapshot(now, settings));
    }
    return { version: 1, addresses, untracked_open: this.#untracked.open + this.#untracked.inherited };
  }

  #brokenLimits(state: AddressState, now: number): number {
    const limits = this.#settings.limits;
    let broken = 0;
    const attempts = state.recordAttempt(now);
    if (limits.max_connection_attempts_per_ip > 0 && attempts > limits.max_connection_attempts_per_ip) broken |= 1 << ATTEMPT;
    if (limits.max_connections_per_ip > 0 && state.open + state.inherited + state.peerOpen >= limits.max_connections_per_ip) broken |= 1 << CONNECTION;
    // Throttling paces an address's bytes; it never refuses it a connection for them.
    if (state.metered && limits.action !== 'throttle' && state.bandwidthUsed(now) >= limits.max_bandwidth_per_ip) broken |= 1 << BANDWIDTH;
    // With workers, the shared total decides in admit() instead.
    if (limits.max_total_connections > 0 && this.#total === null && this.#open + this.#inherited >= limits.max_total_connections) broken |= 1 << TOTAL;
    return broken;
  }

  /** log_only: the first broken limit whose report for this address is not on hold. */
  #reportable(state: AddressState, broken: number, now: number): LimitReason | undefined {
    for (let reason = 0; reason < LIMIT_REASONS.length; reason++) {
      if ((broken & (1 << reason)) !== 0 && state.mayReport(reason, now, this.#settings)) return LIMIT_REASONS[reason];
    }
    return undefined;
  }

  /**
   * The table is full of addresses with live windows or open connections, which takes a
   * distributed flood. Refusing new addresses keeps memory bounded and fails closed: evicting
   * entries instead would let the flood wipe the history of the addresses it is meant to block,
   * and admitting them untracked would lift every per-address limit for exactly the new sources.
   * Clients already tracked keep working, max_total_connections still protects the target, and
   * the refusals end as windows expire and sweeping frees room. Reported as 'attempt_limit' (too
   * many attempts, from too many sources). log_only refuses nothing, so there the address is
   * admitted without state of its own and the violation is reported once per attempts window for
   * all such addresses together.
   */
  #overCeiling(address: string, now: number): AdmitVerdict {
    if (this.#settings.limits.action !== 'log_only') return REFUSED.attempt_limit;
    const state = this.#untracked;
    const violation = state.mayReport(ATTEMPT, now, this.#settings) ? 'attempt_limit' : undefined;
    this.#total?.acquire(0);
    state.open++;
    this.#open++;
    return new Ticket(address, state, violation);
  }

  #reclaim(now: number): boolean {
    this.#sweepSlice(now, CEILING_RECLAIM_SLICE);
    return this.#states.size < this.#maxAddresses;
  }

  #sweepSlice(now: number, maxEntries: number): number {
    const settings = this.#settings;
    let restarted = this.#sweepCursor === undefined;
    if (restarted) this.#passSize = this.#states.size;
    let cursor = this.#sweepCursor ?? this.#states.values();
    let removed = 0;
    for (let seen = 0; seen < maxEntries;) {
      const next = cursor.next();
      if (next.done === true) {
        // One fresh pass at most per call, so a small table is not scanned over and over.
        if (restarted) {
          this.#sweepCursor = undefined;
          return removed;
        }
        cursor = this.#states.values();
        this.#passSize = this.#states.size;
        restarted = true;
        continue;
      }
      seen++;
      const state = next.value;
      // Map iterators survive deletion of the current entry.
      if (state.isIdle(now, settings)) {
        this.#forget(state);
        removed++;
      }
    }
    this.#sweepCursor = cursor;
    return removed;
  }

  #load(snapshot: LimiterSnapshot): void {
    const now = this.#clock();
    const settings = this.#settings;
    let untracked = nonNegativeCount(snapshot.untracked_open);
    for (const entry of snapshot.addresses) {
      const open = nonNegativeCount(entry.open);
      if (settings.perAddress && this.#states.size < this.#maxAddresses && !this.#states.has(entry.address)) {
        const state = AddressState.restore({ ...entry, open }, now, settings, this.#changed);
        if (!state.isIdle(now, settings)) {
          this.#states.set(entry.address, state);
          this.#inherited += state.inherited;
        }
        continue;
      }
      untracked += open;
    }
    this.#untracked.inherited = untracked;
    this.#inherited += untracked;
  }
}

/** Index of the lowest set bit of a non-zero mask. */
function firstBit(mask: number): number {
  return 31 - Math.clz32(mask & -mask);
}
