/**
 * The targets of a listener with several of them (or with health checks): which are up, and which
 * one a new connection or UDP session goes to. No sockets and no timers here — the health checker
 * and the listeners feed it results, and it answers synchronously.
 *
 * Choosing. Only targets that are up are chosen, and backups only while no regular target is up.
 * Among those:
 * - round_robin: in turn, a cursor moving past each target chosen (down ones are skipped, so the
 *   rest share their load evenly);
 * - least_connections: the fewest open connections (UDP: sessions), ties in turn;
 * - source_hash: rendezvous hashing of the client address with each target's address: every
 *   target gets a score for the client and the highest wins, so a client keeps its target, and
 *   when one target goes down only its own clients move (each to its own next best). Stable across
 *   restarts and reloads, as it depends on the addresses only.
 * A choice never allocates; `exclude` holds the targets one connection already tried.
 *
 * Health. Every target starts up. Active checks move a target down after `fall` failed checks in a
 * row and up after `rise` passed ones, except that a target's first check ever marks it down at
 * once when it fails: at start-up a dead target should not get `fall` intervals of traffic. A
 * connection that could not be made (refused, timed out) marks its target down at once; the checks
 * (or, without health_check, recovery probes with rise 1) bring it back. Each change is reported
 * through `onChange`, once per transition.
 *
 * A restarted or reloaded listener's pool inherits the states its predecessor last reported
 * (`inherit`): a target found dead stays down, and comes back the way any down target does, after
 * `rise` passed checks (or one recovery probe). Not a transition: nothing is reported for it.
 */
import type { BalanceMode, Endpoint, TargetConfig } from '../config/types.js';
import type { TargetStates } from '../ipc/protocol.js';
import type { ResolvedAddress } from './target-resolver.js';

export class PoolTarget {
  /** As written; the `target` label of packetpony_target_up. */
  readonly address: string;
  readonly endpoint: Endpoint;
  readonly backup: boolean;
  readonly index: number;
  /** For source_hash. */
  readonly seed: number;
  up = true;
  /** Open connections (UDP: sessions) through this target, for least_connections. */
  active = 0;
  /** UDP pools: the address sessions connect to, refreshed in the background; null until known. */
  resolved: ResolvedAddress | null = null;
  passes = 0;
  fails = 0;
  /** A check result has been seen. */
  checked = false;

  constructor(config: TargetConfig, index: number) {
    this.address = config.address;
    this.endpoint = config.endpoint;
    this.backup = config.backup;
    this.index = index;
    this.seed = fnv1a(config.address);
  }
}

export interface TargetStateChange {
  readonly target: PoolTarget;
  readonly up: boolean;
  /** Why, for the log line ("connect ECONNREFUSED (3 failed health checks in a row)"). */
  readonly reason: string;
  /** Whether any target is up after this change. */
  readonly anyUp: boolean;
}

export interface TargetPoolOptions {
  readonly balance: BalanceMode;
  /** Passed checks in a row that bring a target up. */
  readonly rise: number;
  /** Failed checks in a row that take a target down. */
  readonly fall: number;
  readonly onChange?: (change: TargetStateChange) => void;
  /** UDP: a target is chosen only once its address is resolved. */
  readonly needsAddress?: boolean;
}

export class TargetPool {
  readonly targets: readonly PoolTarget[];
  readonly #balance: BalanceMode;
  readonly #rise: number;
  readonly #fall: number;
  readonly #onChange: ((change: TargetStateChange) => void) | undefined;
  readonly #needsAddress: boolean;
  #cursor = 0;

  constructor(targets: readonly TargetConfig[], options: TargetPoolOptions) {
    this.targets = targets.map((config, i) => new PoolTarget(config, i));
    this.#balance = options.balance;
    this.#rise = options.rise;
    this.#fall = options.fall;
    this.#onChange = options.onChange;
    this.#needsAddress = options.needsAddress === true;
  }

  /** Whether any target, regular or backup, is up. */
  get anyUp(): boolean {
    return this.targets.some((t) => t.up);
  }

  /**
   * Starts from the states a previous child of the listener last reported: each target whose
   * address is listed as down (0) is down, as if its checks had failed. Addresses the pool does not
   * have are ignored (a reload may have changed the list). Returns the targets now down.
   */
  inherit(states: TargetStates): PoolTarget[] {
    const down: PoolTarget[] = [];
    for (const target of this.targets) {
      if (states[target.address] !== 0) continue;
      target.up = false;
      target.checked = true;
      target.passes = 0;
      target.fails = 0;
      down.push(target);
    }
    return down;
  }

  /** Up (1) or down (0) per target address: the packetpony_target_up gauge. */
  states(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const t of this.targets) out[t.address] = t.up ? 1 : 0;
    return out;
  }

  /** Where a new connection from `clientIp` goes, or undefined when no target is available. */
  pick(clientIp: string, exclude: ReadonlySet<PoolTarget> | null = null): PoolTarget | undefined {
    return this.#choose(false, clientIp, exclude) ?? this.#choose(true, clientIp, exclude);
  }

  #eligible(t: PoolTarget, backup: boolean, exclude: ReadonlySet<PoolTarget> | null): boolean {
    return t.up && t.backup === backup && (exclude === null || !exclude.has(t)) && (!this.#needsAddress || t.resolved !== null);
  }

  #choose(backup: boolean, clientIp: string, exclude: ReadonlySet<PoolTarget> | null): PoolTarget | undefined {
    const targets = this.targets;
    const n = targets.length;
    if (this.#balance === 'source_hash') {
      const client = fnv1a(clientIp);
      let best: PoolTarget | undefined;
      let bestScore = -1;
      for (const t of targets) {
        if (!this.#eligible(t, backup, exclude)) continue;
        const score = mix(mix((client ^ t.seed) >>> 0) + t.seed);
        if (score > bestScore) {
          best = t;
          bestScore = score;
        }
      }
      return best;
    }
    let best: PoolTarget | undefined;
    for (let i = 0; i < n; i++) {
      const t = targets[(this.#cursor + i) % n]!;
      if (!this.#eligible(t, backup, exclude)) continue;
      if (this.#balance === 'round_robin') {
        best = t;
        break;
      }
      if (best === undefined || t.active < best.active) best = t;
    }
    if (best !== undefined) this.#cursor = (best.index + 1) % n;
    return best;
  }

  /** An active check (or recovery probe) passed. */
  checkPassed(target: PoolTarget): void {
    target.checked = true;
    target.fails = 0;
    if (target.up) return;
    target.passes++;
    if (target.passes >= this.#rise) {
      this.#set(target, true, this.#rise === 1 ? 'a health check passed' : `${this.#rise} health checks passed in a row`);
    }
  }

  /** An active check failed, for `reason`. */
  checkFailed(target: PoolTarget, reason: string): void {
    const first = !target.checked;
    target.checked = true;
    target.passes = 0;
    if (!target.up) return;
    target.fails++;
    if (target.fails >= this.#fall || first) {
      const count = target.fails === 1 ? 'health check' : `${target.fails} failed health checks in a row`;
      this.#set(target, false, `${reason} (${count})`);
    }
  }

  /** A client connection to the target could not be made: it is down until a check says otherwise. */
  connectFailed(target: PoolTarget, reason: string): void {
    target.passes = 0;
    if (target.up) this.#set(target, false, `${reason} (a client connection failed)`);
  }

  #set(target: PoolTarget, up: boolean, reason: string): void {
    target.up = up;
    target.passes = 0;
    target.fails = 0;
    this.#onChange?.({ target, up, reason, anyUp: this.anyUp });
  }
}

/** FNV-1a, 32 bits. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** MurmurHash3's finaliser: every input bit reaches every output bit. */
function mix(value: number): number {
  let h = value | 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
