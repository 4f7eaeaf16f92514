/**
 * When to try again after a child crashed or a bind failed: 100 ms, doubling to a cap of 30 s, and
 * back to 100 ms once the listener has stayed up for a stable minute. Pure; the clock is injected.
 */
export interface BackoffOptions {
  readonly initialMs: number;
  readonly maxMs: number;
  /** Up this long without a failure, the next failure starts again from initialMs. */
  readonly stableMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 100, maxMs: 30_000, stableMs: 60_000 };

export class Backoff {
  readonly #options: BackoffOptions;
  readonly #now: () => number;
  #next: number;
  #upSince: number | undefined;

  constructor(options: BackoffOptions = DEFAULT_BACKOFF, now: () => number = Date.now) {
    this.#options = options;
    this.#now = now;
    this.#next = options.initialMs;
  }

  /** The listener is serving (child ready, socket bound). */
  up(): void {
    this.#upSince ??= this.#now();
  }

  /** Something failed: returns how long to wait before the next attempt. */
  failed(): number {
    if (this.#upSince !== undefined && this.#now() - this.#upSince >= this.#options.stableMs) {
      this.#next = this.#options.initialMs;
    }
    this.#upSince = undefined;
    const delay = this.#next;
    this.#next = Math.min(this.#next * 2, this.#options.maxMs);
    return delay;
  }

  /** The delay the next failure would get, for messages. */
  get upcoming(): number {
    return this.#next;
  }
}
