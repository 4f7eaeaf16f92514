/**
 * Gives memory back after a flood. A flood of new source addresses grows the per-address table
 * (and, for UDP, the sessions) to tens of thousands of entries; once the sweep has dropped them, the
 * garbage sits in V8's old generation until a full collection, which an idle child may put off for
 * hours: measured, a child at 54 MiB stayed at 140–167 MiB after each of five 100,000-source floods.
 * So when the table has shrunk by a large amount since the last look, the child asks V8 for a full
 * collection, twice (children run with --expose-gc; see child-process.ts). It blocks the event loop
 * for tens of milliseconds, once per flood, at a moment the child has just seen its load fall.
 * Then the C heap is trimmed (`trim`, where given): the native side of tens of thousands of closed
 * sockets was freed between live allocations, and only malloc_trim hands those pages back.
 */

/** Addresses the table must have lost, and the share of its peak, before a collection is worth it. */
export const RECLAIM_MIN_DROP = 2_000;
const RECLAIM_SHARE = 0.5;

export class MemoryReclaimer {
  readonly #collect: (() => void) | null;
  readonly #trim: (() => void) | null;
  #peak = 0;
  #previous = 0;
  /** Reclaims done (each two collections; for tests). */
  collections = 0;

  constructor(collect: (() => void) | null = MemoryReclaimer.exposedGc(), trim: (() => void) | null = null) {
    this.#collect = collect;
    this.#trim = trim;
  }

  /** V8's gc(), when the process runs with --expose-gc; null otherwise (then nothing is done). */
  static exposedGc(): (() => void) | null {
    const gc = (globalThis as { gc?: unknown }).gc;
    return typeof gc === 'function' ? () => (gc as () => void)() : null;
  }

  /**
   * Called after each sweep with the table's size. Collects once the table has lost at least
   * RECLAIM_MIN_DROP addresses and half its peak, and has stopped shrinking (a sweep takes a tenth
   * of the table per pass: one collection at its end rather than one per pass).
   */
  observe(tracked: number): void {
    const shrinking = tracked < this.#previous;
    this.#previous = tracked;
    if (tracked > this.#peak) {
      this.#peak = tracked;
      return;
    }
    const dropped = this.#peak - tracked;
    if (shrinking || dropped < RECLAIM_MIN_DROP || dropped < this.#peak * RECLAIM_SHARE) return;
    this.#peak = tracked;
    if (this.#collect === null) return;
    this.collections++;
    // Twice: measured in a child after a 100,000-source flood, one collection left the old space's
    // emptied pages committed (RSS 74 MiB, heap 5 of 17 MiB used); a second released them (65).
    this.#collect();
    this.#collect();
    this.#trim?.();
  }
}
