/**
 * When a sink tries its destination again after a failure: 100 ms, doubling to a cap of 10 s, back
 * to the start after a success. Short enough that a restarted syslog server gets events again
 * quickly, long enough that a dead one costs nothing.
 */
export class RetryDelay {
  readonly #initialMs: number;
  readonly #maxMs: number;
  #next: number;

  constructor(initialMs = 100, maxMs = 10_000) {
    this.#initialMs = initialMs;
    this.#maxMs = maxMs;
    this.#next = initialMs;
  }

  /** A failure: how long to wait before the next attempt. */
  failed(): number {
    const delay = this.#next;
    this.#next = Math.min(this.#next * 2, this.#maxMs);
    return delay;
  }

  succeeded(): void {
    this.#next = this.#initialMs;
  }
}
