/**
 * The TCP relay's inactivity timeouts (tcp.*, in ms, 0 = off): never deadlines from the start, so
 * a connection that keeps moving data is never cut. They run once the target is connected:
 * - idle_timeout: nothing moved for that long — no byte read from either side, no write to either
 *   side progressing. A direction the meter is throttling counts as moving.
 * - read_timeout: nothing read from either side for that long while the relay is waiting for
 *   input. Before any data flowed, that is "the client (and the target) said nothing since the
 *   connection opened"; once data has flowed, "neither side sent anything". Time during which a
 *   direction is blocked on a slow peer or paused by the meter does not count: then the silence is
 *   ours, and write_timeout is the one that applies.
 * - write_timeout: a write to a peer has been pending that long with no progress — the peer's
 *   kernel accepted none of it (libuv's queue did not shrink) and it did not complete. A peer that
 *   reads slowly but steadily is not cut.
 * One coarse timer per connection checks these; the hot path only bumps counters and the timer
 * compares them with its previous look, so activity is seen at the first tick after it. Ticks come
 * every sixteenth of the shortest timeout (at least 10 ms), and the last one before a timeout falls
 * due is moved to the moment it does, so the timer's own period adds no lateness: a timeout fires
 * between 1× and about 1.07× its value after the last activity (one tick to see it), never early.
 */
import type { TcpSettings } from '../config/types.js';
import type { Flow } from './relay-flow.js';

const MIN_TICK_MS = 10;
/** Inactivity ticks per shortest timeout: how late (1/16 = 6.25 %) activity may be seen. */
const TICKS_PER_TIMEOUT = 16;

/** What the timer needs from its relay. */
export interface InactivityOwner {
  /** The relay is ending: the timer has nothing more to say. */
  readonly closing: boolean;
  /** A timeout fell due; `reason` is the close event's text. */
  timedOut(reason: string): void;
}

export class InactivityTimer {
  readonly #owner: InactivityOwner;
  readonly #up: Flow;
  readonly #down: Flow;
  readonly #tcp: TcpSettings;
  readonly #tickMs: number;
  #timer: NodeJS.Timeout | null;
  // In performance.now() ms; see the header for the rules.
  #seenReads = 0;
  #lastRead: number;
  #lastActive: number;

  /** Starts watching a connected relay's flows: a timer, or null when every timeout is off. */
  static start(owner: InactivityOwner, up: Flow, down: Flow, tcp: TcpSettings): InactivityTimer | null {
    const { read_timeout, write_timeout, idle_timeout } = tcp;
    let shortest = Infinity;
    for (const ms of [read_timeout, write_timeout, idle_timeout]) if (ms > 0 && ms < shortest) shortest = ms;
    if (shortest === Infinity) return null;
    return new InactivityTimer(owner, up, down, tcp, Math.max(MIN_TICK_MS, Math.floor(shortest / TICKS_PER_TIMEOUT)));
  }

  private constructor(owner: InactivityOwner, up: Flow, down: Flow, tcp: TcpSettings, tickMs: number) {
    this.#owner = owner;
    this.#up = up;
    this.#down = down;
    this.#tcp = tcp;
    this.#tickMs = tickMs;
    const now = performance.now();
    this.#lastRead = now;
    this.#lastActive = now;
    this.#timer = setTimeout(this.#onTick, tickMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  readonly #onTick = (): void => {
    if (this.#owner.closing || this.#timer === null) return;
    const now = performance.now();
    const up = this.#up;
    const down = this.#down;
    const reads = up.bytes + down.bytes;
    if (reads !== this.#seenReads) {
      this.#seenReads = reads;
      this.#lastRead = now;
      this.#lastActive = now;
    }
    const upMoved = up.observe(now);
    const downMoved = down.observe(now);
    const throttled = up.throttled || down.throttled;
    if (upMoved || downMoved || throttled) this.#lastActive = now;
    if (up.pending || down.pending || throttled) this.#lastRead = now;

    const { read_timeout, write_timeout, idle_timeout } = this.#tcp;
    if (write_timeout > 0) {
      const stuck = up.isStuck(now, write_timeout) ? 'target' : down.isStuck(now, write_timeout) ? 'client' : null;
      if (stuck !== null) {
        this.#owner.timedOut(`write timeout: the ${stuck} accepted no data for ${write_timeout} ms`);
        return;
      }
    }
    if (idle_timeout > 0 && now - this.#lastActive >= idle_timeout) {
      this.#owner.timedOut(`idle timeout: no data in either direction for ${idle_timeout} ms`);
      return;
    }
    if (read_timeout > 0 && now - this.#lastRead >= read_timeout) {
      const what = reads === 0 ? 'the client sent nothing' : 'neither side sent anything';
      this.#owner.timedOut(`read timeout: ${what} for ${read_timeout} ms`);
      return;
    }
    // The next look: a tick on, or exactly when a timeout falls due if that is sooner. (Ticks
    // alone would add up to a tick of lateness: the loop's cached clock makes a timer fire a
    // little early by performance.now(), and the due check then waits for the following tick.)
    let next = this.#tickMs;
    if (idle_timeout > 0) next = Math.min(next, this.#lastActive + idle_timeout - now);
    if (read_timeout > 0) next = Math.min(next, this.#lastRead + read_timeout - now);
    if (write_timeout > 0) {
      if (up.stuckSince >= 0) next = Math.min(next, up.stuckSince + write_timeout - now);
      if (down.stuckSince >= 0) next = Math.min(next, down.stuckSince + write_timeout - now);
    }
    if (next >= this.#tickMs) {
      this.#timer.refresh();
      return;
    }
    this.#timer = setTimeout(this.#onTick, Math.max(1, Math.ceil(next)));
    this.#timer.unref();
  };
}
