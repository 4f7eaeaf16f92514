/**
 * A sliding-window sum (connection attempts, bytes) over the last `span` milliseconds.
 *
 * The window is cut into N sub-buckets of width w = span / N, kept in a ring of N + 1 slots: the N
 * newest (the current one included) lie wholly inside `(now - span, now]`, the oldest straddles the
 * trailing edge and is weighted by the fraction of it still inside. Only that one sub-bucket is
 * estimated, so the result is within ± its content of the exact sum. In time: every event counts in
 * full until at least `span - w` after it happened, then fades out linearly, and is gone by
 * `span + w` — with the default N = 20 the window edge is sharp to 5 % of the window. The ring
 * slides continuously: there is no moment when the whole count resets.
 *
 * O(1) per call: moving the ring forward clears at most N + 1 slots, and a running total saves the
 * sum. No allocation after construction. Amounts are integers (counts, bytes), which keeps the
 * running total exact.
 */

export const DEFAULT_SUB_BUCKETS = 20;

/**
 * One non-empty sub-bucket in a snapshot: its age in ms, measured to the bucket's end (the youngest
 * any of its events can be, so a restored window forgets them no earlier than the original would
 * have), and its content.
 */
export type WindowEntry = readonly [age: number, amount: number];

export class SlidingWindow {
  readonly #span: number;
  readonly #width: number;
  // A plain array sized once stays on the V8 heap with no slack; a typed array this size would
  // bring an external backing store per tracked address.
  readonly #slots: number[];
  /** Absolute index `floor(t / width)` of the newest slot. */
  #head = Number.NEGATIVE_INFINITY;
  #headSlot = 0;
  #total = 0;

  constructor(span: number, subBuckets = DEFAULT_SUB_BUCKETS) {
    if (!(span > 0 && Number.isFinite(span))) throw new RangeError(`window span must be a positive number of ms, got ${span}`);
    if (!(Number.isInteger(subBuckets) && subBuckets >= 1)) throw new RangeError(`sub-bucket count must be a positive integer, got ${subBuckets}`);
    this.#span = span;
    this.#width = span / subBuckets;
    this.#slots = new Array<number>(subBuckets + 1).fill(0);
  }

  /** Rebuilds a window from `snapshot()` output taken `now` (by the restoring clock). */
  static restore(span: number, entries: readonly WindowEntry[], now: number, subBuckets = DEFAULT_SUB_BUCKETS): SlidingWindow {
    const window = new SlidingWindow(span, subBuckets);
    for (const [age, amount] of entries) {
      if (age >= 0 && age < span && amount > 0) window.add(now - age, amount);
    }
    return window;
  }

  get span(): number {
    return this.#span;
  }

  add(now: number, amount = 1): void {
    const index = Math.floor(now / this.#width);
    if (index >= this.#head) {
      this.#advance(index);
      this.#slots[this.#headSlot] += amount;
      this.#total += amount;
      return;
    }
    // A clock that stepped back, or a restored entry: file it under its own sub-bucket if that is
    // still in the ring, so it expires when it should and not later.
    const back = this.#head - index;
    const length = this.#slots.length;
    if (back >= length) return;
    let slot = this.#headSlot - back;
    if (slot < 0) slot += length;
    this.#slots[slot] += amount;
    this.#total += amount;
  }

  /**
   * count() and add() in one, for the per-chunk path: adds `amount` only if the sum with it stays
   * within `cap` (count(now) + amount <= cap), and says whether it did. The index is computed once
   * where the two calls computed it twice.
   */
  addWithin(now: number, amount: number, cap: number): boolean {
    const position = now / this.#width;
    const index = Math.floor(position);
    if (index < this.#head) {
      // A stamp older than the newest sub-bucket (the clock stepped back): the general path.
      if (this.count(now) + amount > cap) return false;
      this.add(now, amount);
      return true;
    }
    if (index > this.#head) this.#advance(index);
    const slots = this.#slots;
    let sum = this.#total;
    if (sum !== 0) {
      const oldestSlot = this.#headSlot + 1 === slots.length ? 0 : this.#headSlot + 1;
      sum -= slots[oldestSlot]! * (position - index);
    }
    if (sum + amount > cap) return false;
    slots[this.#headSlot] += amount;
    this.#total += amount;
    return true;
  }

  /** The sum over `(now - span, now]`, within one sub-bucket's content (see the header). */
  count(now: number): number {
    const position = now / this.#width;
    const index = Math.floor(position);
    if (index > this.#head) this.#advance(index);
    if (this.#total === 0) return 0;
    const oldestSlot = this.#headSlot + 1 === this.#slots.length ? 0 : this.#headSlot + 1;
    // How far `now` is into the newest sub-bucket is how much of the oldest has left the window.
    const gone = position - this.#head;
    return this.#total - this.#slots[oldestSlot] * (gone > 0 ? gone : 0);
  }

  /** True when nothing is left in the ring: the state holding this window may be dropped. */
  isEmpty(now: number): boolean {
    const index = Math.floor(now / this.#width);
    if (index > this.#head) this.#advance(index);
    return this.#total === 0;
  }

  /** The non-empty sub-buckets, oldest first, for carrying the window over to another process. */
  snapshot(now: number): WindowEntry[] {
    const index = Math.floor(now / this.#width);
    if (index > this.#head) this.#advance(index);
    const entries: WindowEntry[] = [];
    if (this.#total === 0) return entries;
    const length = this.#slots.length;
    for (let back = length - 1; back >= 0; back--) {
      let slot = this.#headSlot - back;
      if (slot < 0) slot += length;
      const amount = this.#slots[slot];
      if (amount === 0) continue;
      const end = (this.#head - back + 1) * this.#width;
      entries.push([Math.max(0, now - end), amount]);
    }
    return entries;
  }

  #advance(index: number): void {
    const slots = this.#slots;
    const length = slots.length;
    const gap = index - this.#head;
    if (gap >= length) {
      for (let i = 0; i < length; i++) slots[i] = 0;
      this.#total = 0;
      this.#headSlot = 0;
    } else {
      let slot = this.#headSlot;
      for (let i = 0; i < gap; i++) {
        slot = slot + 1 === length ? 0 : slot + 1;
        this.#total -= slots[slot];
        slots[slot] = 0;
      }
      this.#headSlot = slot;
    }
    this.#head = index;
  }
}
