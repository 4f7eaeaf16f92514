/**
 * Notices a listener that has run out of file descriptors while accepting.
 *
 * libuv meets EMFILE on accept(2) by accepting the waiting connections into a descriptor it keeps
 * in reserve and closing them at once (its "EMFILE trick"), and does not tell node: a listener at
 * its limit resets clients in silence. (When the dial toward the target is what fails, the relay
 * sees the error and the listener reports it; this covers the other case.) Two cheap looks, since
 * counting /proc/self/fd on every accept would cost more than the accept:
 *
 * - per accepted connection, its descriptor's number: the kernel hands out the lowest free one, so
 *   a number within two of the limit means every lower one is taken, and once the dial has taken
 *   the last, the next client is reset. This catches a burst that fills the table and drains again
 *   between two timer ticks. Where the number is hidden (net.Socket), the listener's tally stands
 *   in for it.
 * - on a timer, the listener's own tally of its sockets against the limit, and only when that comes
 *   near, a real count. This catches a table that stays full whatever the order it filled in.
 *
 * The limit itself (prlimit can change it while we run) is read again when the tally comes near
 * it and otherwise every LIMIT_READ_EVERY looks (10 s): reading /proc/self/limits is five system
 * calls and some string work, twice a second in every idle child otherwise.
 *
 * Linux only (/proc): elsewhere the watch does nothing.
 */
import { readdirSync, readFileSync } from 'node:fs';

export interface DescriptorProbe {
  /**
   * The soft RLIMIT_NOFILE now (prlimit can change it while we run); Infinity when unlimited or
   * unknown; NaN when it cannot be read just now (reading it takes a descriptor too).
   */
  limit(): number;
  /** Descriptors open in this process now; Infinity when the table is too full to look; -1 when it cannot be told. */
  open(): number;
}

function tableFull(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'EMFILE' || code === 'ENFILE';
}

/** Reads /proc/self: the limit from `limits`, the count from `fd`. */
export const procProbe: DescriptorProbe = {
  limit() {
    try {
      const line = readFileSync('/proc/self/limits', 'latin1')
        .split('\n')
        .find((l) => l.startsWith('Max open files'));
      const soft = line?.split(/\s+/)[3];
      return soft === undefined || soft === 'unlimited' ? Infinity : Number(soft);
    } catch (error) {
      return tableFull(error) ? NaN : Infinity;
    }
  },
  open() {
    try {
      // The listing holds the descriptor opendir() itself uses: one more than before the call.
      return readdirSync('/proc/self/fd').length - 1;
    } catch (error) {
      // Listing the folder takes a descriptor of its own: a full table is why it failed.
      return tableFull(error) ? Infinity : -1;
    }
  },
};

export interface DescriptorWatchOptions {
  /** Sockets the listener holds now (two per relayed connection). */
  readonly inUse: () => number;
  /** Called on each look that finds the table full, or one short of it. */
  readonly onFull: () => void;
  readonly probe?: DescriptorProbe;
  readonly intervalMs?: number;
}

/** Timer looks between two readings of the limit while the tally stays far from it. */
export const LIMIT_READ_EVERY = 20;

/** Below this distance from the limit (by the listener's tally) the descriptors are counted. */
function margin(limit: number): number {
  return Math.max(8, Math.ceil(limit * 0.05));
}

export class DescriptorWatch {
  readonly #options: DescriptorWatchOptions;
  readonly #probe: DescriptorProbe;
  /** What the process held before the listener's first connection: IPC, epoll, stdio… */
  readonly #baseline: number;
  /** /proc could be read: without it there is nothing to watch. */
  readonly #watchable: boolean;
  #timer: NodeJS.Timeout | undefined;
  /** The limit as last read: kept when a full table keeps it from being read again. */
  #limit = Infinity;
  #looks = 0;

  constructor(options: DescriptorWatchOptions) {
    this.#options = options;
    this.#probe = options.probe ?? procProbe;
    const open = this.#probe.open();
    this.#baseline = Math.max(0, open);
    this.#watchable = open >= 0;
    this.#readLimit();
  }

  start(): void {
    if (this.#timer !== undefined || !this.#watchable) return;
    this.#timer = setInterval(() => this.check(), this.#options.intervalMs ?? 500);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Per accepted connection: `fd` is its descriptor's number (undefined where node does not say). */
  accepted(fd: number | undefined): void {
    if (fd !== undefined && fd >= this.#limit - 2) this.#options.onFull();
  }

  /**
   * Per accepted connection whose descriptor's number cannot be known (the public path: net.Socket
   * hides it): the listener's tally, this connection included, stands in for the number. It can
   * only overstate (a closing relay still counted), and only near the limit.
   */
  acceptedUnnumbered(): void {
    if (this.#baseline + this.#options.inUse() + 1 >= this.#limit - 2) this.#options.onFull();
  }

  /** The timer's look; true when the table was found full. */
  check(): boolean {
    const used = this.#baseline + this.#options.inUse();
    // Near the limit as last read, read it again (it may have been raised) before looking closer.
    const near = Number.isFinite(this.#limit) && used + margin(this.#limit) >= this.#limit;
    if (++this.#looks >= LIMIT_READ_EVERY || near) {
      this.#looks = 0;
      this.#readLimit();
    }
    const limit = this.#limit;
    if (!Number.isFinite(limit)) return false;
    if (used + margin(limit) < limit) return false;
    const open = this.#probe.open();
    if (open < 0 || open < limit - 1) return false;
    this.#options.onFull();
    return true;
  }

  #readLimit(): number {
    const read = this.#probe.limit();
    if (!Number.isNaN(read)) this.#limit = read;
    return this.#limit;
  }
}
