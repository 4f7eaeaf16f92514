/**
 * The bounded queue in front of every asynchronous sink: a ring buffer with a fixed capacity, so a
 * sink that cannot keep up costs a known amount of memory and the caller learns at once that an
 * event was refused (and counts it) instead of waiting.
 */

/** Events one sink may hold while its destination is slow or away (about 3 MB of small objects). */
export const SINK_QUEUE_CAPACITY = 10_000;

export class SinkQueue<T> {
  readonly capacity: number;
  readonly #items: Array<T | undefined>;
  #head = 0;
  #length = 0;

  constructor(capacity: number = SINK_QUEUE_CAPACITY) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`queue capacity must be a positive integer, not ${capacity}`);
    this.capacity = capacity;
    this.#items = new Array<T | undefined>(capacity);
  }

  get length(): number {
    return this.#length;
  }

  /** Appends; false (and nothing stored) when the queue is full. */
  push(item: T): boolean {
    if (this.#length === this.capacity) return false;
    this.#items[(this.#head + this.#length) % this.capacity] = item;
    this.#length++;
    return true;
  }

  /** Puts an item back at the front (a send that failed and will be retried); false when full. */
  unshift(item: T): boolean {
    if (this.#length === this.capacity) return false;
    this.#head = (this.#head + this.capacity - 1) % this.capacity;
    this.#items[this.#head] = item;
    this.#length++;
    return true;
  }

  shift(): T | undefined {
    if (this.#length === 0) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head] = undefined; // let the event be collected
    this.#head = (this.#head + 1) % this.capacity;
    this.#length--;
    return item;
  }

  /** Empties the queue; returns how many items were thrown away. */
  clear(): number {
    const dropped = this.#length;
    while (this.#length > 0) this.shift();
    return dropped;
  }
}
