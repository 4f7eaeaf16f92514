/**
 * A shared listener's side of the fleet (issue 24): every sync interval, one exchange with the
 * store — this host's own counts of the addresses that changed (and, a slice at a time, of the
 * rest, as their windows slide) go in, the rest of the fleet's counts of them come back and are
 * added to the limiter's (RateLimiter.applyPeers). The limiter always decides alone, at once; so
 * the fleet can overshoot a limit by what reaches the other hosts within about one interval before
 * they hear of it (docs/operations.md, "Limits across a fleet").
 *
 * At most one exchange is in flight: a slow store makes exchanges rarer, never queues them. When
 * the store cannot be reached (not connected, an error, no answer within the timeout) the limiter
 * switches to shared_limits.on_store_down, which is said once in the log and in
 * packetpony_shared_limits_up; counts that did not reach the store go with a later exchange, so
 * once it answers again the fleet's counts merge back. Writes are whole counts, not increments
 * (exchange-script.ts), so an exchange that timed out but ran later counts once.
 */
import { randomBytes } from 'node:crypto';
import type { RateLimits, SharedLimitsSettings } from '../config/types.js';
import type { RateLimiter, SharedMode } from '../policy/index.js';
import type { LogLevel } from '../telemetry/events.js';
import type { ListenerStats } from '../telemetry/stats.js';
import type { ExchangeParams } from './exchange-script.js';
import type { SharedStore } from './redis-store.js';

/** Addresses per exchange at most; more wait for the next interval. */
export const MAX_BATCH = 1_000;
/** How often at most an address whose counts did not change is sent again (its windows slide). */
const MAX_REFRESH_MS = 1_000;

export interface LimitSyncOptions {
  readonly listener: string;
  readonly limits: RateLimits;
  readonly settings: SharedLimitsSettings;
  readonly limiter: RateLimiter;
  readonly store: SharedStore;
  readonly stats: ListenerStats;
  /** The limiter's clock (ms). */
  readonly clock: () => number;
  readonly log: (level: LogLevel, message: string, fields?: Record<string, string | number>) => void;
}

/** How long one exchange may take before it counts as failed (and the store as down). */
export function exchangeTimeoutMs(syncInterval: number): number {
  return Math.min(5_000, Math.max(500, 10 * syncInterval));
}

export class LimitSync {
  readonly #options: LimitSyncOptions;
  readonly #params: ExchangeParams;
  readonly #refreshMs: number;
  readonly #downMode: Exclude<SharedMode, 'shared'>;
  #timer: NodeJS.Timeout | undefined;
  #inFlight: Promise<void> | null = null;
  /** null until the first exchange tells. */
  #up: boolean | null = null;
  #stopped = false;
  /** performance.now() at start(): the first connection has until the exchange timeout. */
  #startedAt = 0;

  constructor(options: LimitSyncOptions) {
    this.#options = options;
    const { settings, limits } = options;
    const attemptsWindowMs = limits.max_connection_attempts_per_ip > 0 ? limits.attempts_window : 0;
    const bytesWindowMs = limits.max_bandwidth_per_ip > 0 ? limits.bandwidth_window : 0;
    const windows = [attemptsWindowMs, bytesWindowMs].filter((ms) => ms > 0);
    // A twentieth of the shorter window: the sliding windows' own step.
    this.#refreshMs = Math.max(settings.sync_interval, Math.min(MAX_REFRESH_MS, ...windows.map((ms) => ms / 20)));
    const aliveMs = Math.max(2_000, 5 * settings.sync_interval, 2 * exchangeTimeoutMs(settings.sync_interval));
    this.#params = {
      base: `${settings.key_prefix}:${options.listener}`,
      instance: settings.instance,
      run: randomBytes(6).toString('hex'),
      aliveMs,
      keyMs: Math.max(0, ...windows) + 10 * Math.max(this.#refreshMs, aliveMs),
      attemptsWindowMs,
      bytesWindowMs,
    };
    this.#downMode = settings.on_store_down;
    options.stats.sharedUp = 0;
  }

  start(): void {
    this.#startedAt = performance.now();
    this.#timer = setInterval(() => this.tick(), this.#options.settings.sync_interval);
    this.#timer.unref();
    this.tick();
  }

  /** Ends the exchanges: waits for the one in flight, then closes the connection. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    await this.#inFlight;
    await this.#options.store.close();
  }

  /** One exchange, unless one is in flight (the timer's job; public for tests). */
  tick(): void {
    if (this.#inFlight !== null || this.#stopped) return;
    const { store, limiter, clock, stats } = this.#options;
    if (!store.ready) {
      // Until the first connection is made (or fails) the limiter decides on this host's counts
      // alone, without a word: a store that takes a few ms to answer at start is not "down".
      const waited = performance.now() - this.#startedAt;
      const timeout = exchangeTimeoutMs(this.#options.settings.sync_interval);
      if (store.connecting && this.#up === null && waited < timeout) return;
      // Counted as a failed sync, so that an outage shows in the error rate, not only in _up.
      stats.observeSync(0, false);
      this.#down(store.connecting ? `no connection within ${timeout} ms` : store.problem);
      return;
    }
    // Sent even when nothing changed: the exchange is also this host's heartbeat.
    const entries = limiter.collectShared(MAX_BATCH, clock() - this.#refreshMs);
    const started = performance.now();
    this.#inFlight = store.exchange(this.#params, entries).then(
      (peers) => {
        stats.observeSync((performance.now() - started) / 1000, true);
        this.#upAgain();
        for (let i = 0; i < entries.length; i++) limiter.applyPeers(entries[i]!.address, peers[3 * i]!, peers[3 * i + 1]!, peers[3 * i + 2]!);
      },
      (error: unknown) => {
        limiter.returnShared(entries);
        stats.observeSync(0, false);
        this.#down(error instanceof Error ? error.message : String(error));
      },
    ).finally(() => {
      this.#inFlight = null;
    });
  }

  #upAgain(): void {
    if (this.#up === true) return;
    const { limiter, stats, settings, log, listener } = this.#options;
    limiter.setSharedMode('shared');
    stats.sharedUp = 1;
    if (this.#up === false) log('notice', `listener ${listener}: the shared-limits store ${settings.store} answers again; limits are shared with the fleet again`, { store: settings.store });
    else log('info', `listener ${listener}: limits shared with the fleet through ${settings.store} as instance ${settings.instance}`, { store: settings.store, instance: settings.instance });
    this.#up = true;
  }

  #down(problem: string): void {
    if (this.#up === false) return;
    const { limiter, stats, settings, log, listener } = this.#options;
    limiter.setSharedMode(this.#downMode);
    stats.sharedUp = 0;
    const meanwhile = {
      local: 'each host enforces its own counts until it is back',
      open: 'new connections are admitted without per-address limits until it is back (on_store_down: open)',
      closed: 'new connections are refused until it is back (on_store_down: closed)',
    }[this.#downMode];
    log('warning', `listener ${listener}: cannot reach the shared-limits store ${settings.store} (${problem || 'no answer'}); ${meanwhile}`, { store: settings.store });
    this.#up = false;
  }
}
