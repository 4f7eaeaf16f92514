/**
 * Everything a listener's limiter remembers about one client address: its open connections, its
 * attempt and bandwidth windows, its throttle pace and when it was last reported.
 */
import { BANDWIDTH, LIMIT_REASONS, type LimitSettings } from './limit-settings.js';
import { SlidingWindow } from './sliding-window.js';
import type { AddressSnapshot } from './snapshot.js';
import { CONSUME_DROP, CONSUME_OK, CONSUME_VIOLATION, type LimitReason, type ReadLimit } from './verdict.js';

type Quiet = { -readonly [R in LimitReason]?: number };

/**
 * What consume() meters: a TCP chunk (`stream`), which can be paused; or a UDP datagram, which
 * cannot, from the client (`datagram`) or from the target (`reply`).
 */
export type MeteredUnit = 'stream' | 'datagram' | 'reply';

/**
 * The least pacing balance a throttled address needs for a datagram of `bytes` to pass; below it
 * the datagram is dropped (a datagram cannot wait without a queue) and, dropped, not counted.
 *
 * A client's datagram must be paid for in full. If it could run the balance into debt, as a TCP
 * chunk does, the target's answer to it would find the address in the debt its own question made
 * and be dropped: under a request/response protocol (DNS, a game, a VPN) nearly every exchange
 * would fail, and the useful rate would fall far below throttle_minimum (measured: 3 MB of
 * acknowledged 8 KB datagrams took 113 s instead of about 4 s). A target's datagram may run up a
 * debt of one burst instead, so an answer is not dropped for the cost of its question, while a
 * target that streams is still held to the pace: the debt is bounded, and it is paid off before
 * the client may send again. A datagram larger than one burst needs a full bucket (client) or
 * none in debt (target), or it could never pass.
 */
function datagramFloor(bytes: number, burst: number, unit: MeteredUnit): number {
  const cost = bytes < burst ? bytes : burst;
  return unit === 'reply' ? cost - burst : cost;
}

export class AddressState {
  readonly address: string;
  /** A bandwidth cap is on: chunks must be counted. */
  readonly metered: boolean;
  /** Connections this limiter admitted and that are still open. */
  open = 0;
  /** Connections a previous child admitted that are still open there (live reload). */
  inherited = 0;
  /**
   * Shared limits: what the other hosts of the fleet count for this address (attempts and bytes in
   * their windows, connections open), as of the last exchange with the store; 0 otherwise.
   */
  peerAttempts = 0;
  peerBytes = 0;
  peerOpen = 0;
  /** Shared limits: the address changed since its counts last went to the store. */
  syncDirty = false;
  /** Shared limits: when its counts last went to the store (clock ms; -Infinity: never). */
  syncedAt = Number.NEGATIVE_INFINITY;
  /** Shared limits: the counts last sent were not all zero (so the store holds some to take back). */
  syncedNonZero = false;
  /** Shared limits: where the address goes when it changes (the limiter's list); null when not shared. */
  readonly #changed: AddressState[] | null;
  readonly #attempts: SlidingWindow | null;
  readonly #bandwidth: SlidingWindow | null;
  #throttled = false;
  /** Pacing balance in bytes; negative is a debt the address must wait off. */
  #tokens = 0;
  #tokensAt = 0;
  /** Bytes granted to reads of this address's TCP connections that have not been metered yet. */
  #granted = 0;
  /** Per reason, the time before which it is not reported again; allocated on first report. */
  #quietUntil: number[] | null = null;

  constructor(address: string, attempts: SlidingWindow | null, bandwidth: SlidingWindow | null, changed: AddressState[] | null = null) {
    this.address = address;
    this.#attempts = attempts;
    this.#bandwidth = bandwidth;
    this.metered = bandwidth !== null;
    this.#changed = changed;
  }

  /**
   * A new address, with the windows its listener's limits call for. `changed`: with shared limits,
   * the list the address joins whenever its counts change (once until they are next collected).
   */
  static create(address: string, settings: LimitSettings, changed: AddressState[] | null = null): AddressState {
    const { limits, subBuckets } = settings;
    return new AddressState(
      address,
      limits.max_connection_attempts_per_ip > 0 ? new SlidingWindow(limits.attempts_window, subBuckets) : null,
      limits.max_bandwidth_per_ip > 0 ? new SlidingWindow(limits.bandwidth_window, subBuckets) : null,
      changed,
    );
  }

  /** Shared limits: the counts changed; the address is sent with the next exchange. */
  touch(): void {
    const changed = this.#changed;
    if (changed === null || this.syncDirty) return;
    this.syncDirty = true;
    changed.push(this);
  }

  /** This host's own counts now: attempts and bytes in the windows, connections open. */
  ownCounts(now: number): { attempts: number; bytes: number; open: number } {
    return {
      attempts: this.#attempts === null ? 0 : Math.round(this.#attempts.count(now)),
      bytes: this.#bandwidth === null ? 0 : Math.round(this.#bandwidth.count(now)),
      open: this.open + this.inherited,
    };
  }

  /** A state that only counts connections: for addresses no per-address limit applies to. */
  static untracked(): AddressState {
    return new AddressState('', null, null);
  }

  /**
   * Continues a snapshot taken `now` (by this process's clock). Events are re-filed by age, so a
   * reload that changed a window's length or turned a limit off or on still does the right thing.
   */
  static restore(entry: AddressSnapshot, now: number, settings: LimitSettings, changed: AddressState[] | null = null): AddressState {
    const { limits, subBuckets } = settings;
    const state = new AddressState(
      entry.address,
      limits.max_connection_attempts_per_ip > 0 ? SlidingWindow.restore(limits.attempts_window, entry.attempts ?? [], now, subBuckets) : null,
      limits.max_bandwidth_per_ip > 0 ? SlidingWindow.restore(limits.bandwidth_window, entry.bandwidth ?? [], now, subBuckets) : null,
      changed,
    );
    // A restored address's counts go to the store with the first exchange.
    state.touch();
    state.inherited = entry.open > 0 ? entry.open : 0;
    if (entry.throttle_tokens !== undefined && settings.paceRate > 0) {
      state.#throttled = true;
      state.#tokens = Math.min(entry.throttle_tokens, settings.paceBurst);
      state.#tokensAt = now;
    }
    const quiet = entry.quiet;
    if (quiet !== undefined) {
      const until = LIMIT_REASONS.map((reason) => now + (quiet[reason] ?? Number.NEGATIVE_INFINITY));
      if (until.some((time) => time > now)) state.#quietUntil = until;
    }
    return state;
  }

  /** Counts one attempt; the attempts in the window, this one included (0: no attempt limit). */
  recordAttempt(now: number): number {
    const window = this.#attempts;
    if (window === null) return 0;
    window.add(now, 1);
    this.touch();
    return window.count(now) + this.peerAttempts;
  }

  /** Bytes in the window, the fleet's included. */
  bandwidthUsed(now: number): number {
    return this.#bandwidth === null ? 0 : this.#bandwidth.count(now) + this.peerBytes;
  }

  /** True at most once per quiet period per reason: the caller then reports the violation. */
  mayReport(reason: number, now: number, settings: LimitSettings): boolean {
    const quiet = (this.#quietUntil ??= LIMIT_REASONS.map(() => -Infinity));
    if (now < quiet[reason]) return false;
    quiet[reason] = now + settings.quietPeriods[reason];
    return true;
  }

  /**
   * consume(clock(), bytes, settings, 'stream') as a function of `bytes`, with what is fixed for a
   * connection (the window, the action, the cap) looked up once: a TCP connection's per-chunk meter.
   */
  streamMeter(clock: () => number, settings: LimitSettings): (bytes: number) => number {
    const window = this.#bandwidth;
    if (window === null) return () => CONSUME_OK;
    if (settings.limits.action === 'drop') {
      const cap = settings.limits.max_bandwidth_per_ip;
      if (this.#changed === null) return (bytes) => (window.addWithin(clock(), bytes, cap) ? CONSUME_OK : CONSUME_DROP);
      // Shared: the fleet's bytes count against the cap, and the change goes to the store.
      return (bytes) => {
        if (!window.addWithin(clock(), bytes, cap - this.peerBytes)) return CONSUME_DROP;
        if (!this.syncDirty) this.touch();
        return CONSUME_OK;
      };
    }
    return (bytes) => this.consume(clock(), bytes, settings, 'stream');
  }

  /**
   * Under action throttle, how much the next read of one of this address's TCP connections may
   * take: called with the room in the read's buffer and what that reader still holds of an earlier
   * grant, which it gives back (a reader gives its grant back when the read completes, before the
   * bytes are metered; room 0 only gives back). Paced, a grant is what the pace allows in
   * PACE_TICK_MS, so that the pause after it is about as long and bytes flow steadily (nginx's
   * limit_rate and HAProxy's bwlim size their reads the same way); a large read would buy a pause
   * of seconds. Not yet paced, it is what is left of the cap (at least one paced read), so the read
   * that crosses the cap crosses it by little.
   *
   * Grants still out count as spent, here and in #pace: a reader sizes its read after the previous
   * one and reads later, so without that, two connections of one address could each be granted all
   * that was left and together cross the cap by that much (seen: 600 KB past a 1 MB cap). With it,
   * pacing starts while the others' grants still fit, and the cap is crossed by one paced read.
   */
  streamReadLimit(clock: () => number, settings: LimitSettings): ReadLimit {
    const window = this.#bandwidth!;
    const cap = settings.limits.max_bandwidth_per_ip;
    const paced = settings.paceRead;
    return (room, previous) => {
      this.#granted -= previous;
      let grant = paced;
      if (!this.#throttled) {
        const left = Math.floor(cap - this.peerBytes - window.count(clock()) - this.#granted);
        if (left > paced) grant = left;
      }
      if (grant > room) grant = room;
      this.#granted += grant;
      return grant;
    };
  }

  /** See CONSUME_* in verdict.ts and MeteredUnit for `unit`. */
  consume(now: number, bytes: number, settings: LimitSettings, unit: MeteredUnit): number {
    const window = this.#bandwidth;
    if (window === null) return CONSUME_OK;
    // The fleet's bytes (shared limits; 0 otherwise) leave that much less of the cap.
    const cap = settings.limits.max_bandwidth_per_ip - this.peerBytes;
    if (this.#changed !== null && bytes > 0) this.touch();
    switch (settings.limits.action) {
      case 'drop':
        return window.addWithin(now, bytes, cap) ? CONSUME_OK : CONSUME_DROP;
      case 'log_only':
        window.add(now, bytes);
        return window.count(now) > cap && this.mayReport(BANDWIDTH, now, settings) ? CONSUME_VIOLATION : CONSUME_OK;
      case 'throttle':
        return this.#pace(window, now, bytes, cap, settings, unit);
    }
  }

  /**
   * Within the cap, bytes pass freely. Past it the address is paced by a token bucket shared by all
   * its connections: every chunk is debited, a connection that finds the balance in debt waits
   * until it is paid off. The debt is shared, so N connections of one address wait in turn and
   * their sum, not each of them, moves throttle_minimum per window.
   */
  #pace(window: SlidingWindow, now: number, bytes: number, cap: number, settings: LimitSettings, unit: MeteredUnit): number {
    if (this.#throttled) {
      this.#refill(now, settings);
      // Leaving takes both a full bucket (the client paused: one that reads as soon as its pause
      // ends finds it empty) and a low window; either alone lets a client that keeps pushing, in
      // big chunks or in bursts, out of the throttle once a window.
      if (this.#tokens >= settings.paceBurst && window.count(now) <= settings.paceExitLevel) this.#throttled = false;
    }
    if (!this.#throttled) {
      if (window.addWithin(now, bytes, cap - this.#granted)) return CONSUME_OK;
      this.#throttled = true;
      this.#tokens = 0;
      this.#tokensAt = now;
    }
    if (unit !== 'stream' && this.#tokens < datagramFloor(bytes, settings.paceBurst, unit)) return CONSUME_DROP;
    this.#tokens -= bytes;
    window.add(now, bytes);
    if (this.mayReport(BANDWIDTH, now, settings)) return CONSUME_VIOLATION;
    if (unit !== 'stream' || this.#tokens >= 0) return CONSUME_OK;
    return Math.ceil(-this.#tokens / settings.paceRate);
  }

  #refill(now: number, settings: LimitSettings): void {
    const elapsed = now - this.#tokensAt;
    if (elapsed <= 0) return;
    const tokens = this.#tokens + elapsed * settings.paceRate;
    this.#tokens = tokens < settings.paceBurst ? tokens : settings.paceBurst;
    this.#tokensAt = now;
  }

  /** Nothing worth remembering: no open connection, empty windows, no debt, no report pending. */
  isIdle(now: number, settings: LimitSettings): boolean {
    if (this.open !== 0 || this.inherited !== 0 || this.syncDirty) return false;
    if (this.#attempts !== null && !this.#attempts.isEmpty(now)) return false;
    if (this.#bandwidth !== null && !this.#bandwidth.isEmpty(now)) return false;
    if (this.#throttled) {
      this.#refill(now, settings);
      if (this.#tokens < 0) return false;
    }
    const quiet = this.#quietUntil;
    if (quiet !== null) {
      for (const until of quiet) if (now < until) return false;
    }
    return true;
  }

  snapshot(now: number, settings: LimitSettings): AddressSnapshot {
    const entry: { -readonly [K in keyof AddressSnapshot]: AddressSnapshot[K] } = {
      address: this.address,
      open: this.open + this.inherited,
    };
    const attempts = this.#attempts?.snapshot(now);
    if (attempts !== undefined && attempts.length > 0) entry.attempts = attempts;
    const bandwidth = this.#bandwidth?.snapshot(now);
    if (bandwidth !== undefined && bandwidth.length > 0) entry.bandwidth = bandwidth;
    if (this.#throttled) {
      this.#refill(now, settings);
      entry.throttle_tokens = this.#tokens;
    }
    const quietUntil = this.#quietUntil;
    if (quietUntil !== null) {
      const quiet: Quiet = {};
      let any = false;
      LIMIT_REASONS.forEach((reason, i) => {
        const left = quietUntil[i] - now;
        if (left > 0) {
          quiet[reason] = left;
          any = true;
        }
      });
      if (any) entry.quiet = quiet;
    }
    return entry;
  }
}
