/**
 * A listener's open connections counted across its workers, in one page of shared memory that the
 * supervisor creates and each worker maps (reuseport.c says how the count stays exact). Used only
 * with `workers:` above 1; a single child counts in its limiter alone.
 *
 * Each process that counts has a slot of its own on the page: the supervisor hands out the slots
 * and, when a process is gone, takes what its slot held off the total (reclaim).
 */
import { nativeAddon } from './addon.js';

interface CounterCalls {
  counterCreate(): number;
  counterOpen(fd: number): object | number;
  counterAcquire(page: object, slot: number, max: number): number;
  counterRelease(page: object, slot: number): number;
  counterReclaim(page: object, slot: number): number;
  counterTotal(page: object): number;
  readonly counterSlots: number;
}

function calls(): CounterCalls | null {
  const addon = nativeAddon() as unknown as Partial<CounterCalls> | null;
  return addon !== null && typeof addon.counterCreate === 'function' && typeof addon.counterAcquire === 'function' ? (addon as CounterCalls) : null;
}

/** Whether the addon can count for several processes (built with reuseport.c). */
export function connectionTotalSupported(): boolean {
  return calls() !== null;
}

/** How many processes one page can count for: live workers and those finishing after a reload. */
export function connectionTotalSlots(): number {
  return calls()?.counterSlots ?? 0;
}

/** A mapped page. `fd` stays open as long as the counter is used: children inherit it. */
export class ConnectionTotal {
  readonly fd: number;
  readonly #page: object;
  readonly #calls: CounterCalls;

  private constructor(fd: number, page: object, addon: CounterCalls) {
    this.fd = fd;
    this.#page = page;
    this.#calls = addon;
  }

  /** A new zeroed page (the supervisor's). Throws with the errno's name when it cannot. */
  static create(): ConnectionTotal {
    const addon = calls();
    if (addon === null) throw new Error('the native addon has no shared counter (run npm run build)');
    const fd = addon.counterCreate();
    if (fd < 0) throw new Error(`memfd_create failed (errno ${-fd})`);
    return ConnectionTotal.open(fd);
  }

  /** The page behind an inherited descriptor (a worker's). */
  static open(fd: number): ConnectionTotal {
    const addon = calls();
    if (addon === null) throw new Error('the native addon has no shared counter (run npm run build)');
    const page = addon.counterOpen(fd);
    if (typeof page === 'number') throw new Error(`cannot map the connection counter (errno ${-page})`);
    return new ConnectionTotal(fd, page, addon);
  }

  /** One more connection for `slot` if the total is under `max` (0: no cap); false at the cap. */
  acquire(slot: number, max: number): boolean {
    return this.#calls.counterAcquire(this.#page, slot, max) === 1;
  }

  release(slot: number): void {
    this.#calls.counterRelease(this.#page, slot);
  }

  /** Takes a gone process's connections off the total; returns how many it held. */
  reclaim(slot: number): number {
    return this.#calls.counterReclaim(this.#page, slot);
  }

  get total(): number {
    return this.#calls.counterTotal(this.#page);
  }
}
