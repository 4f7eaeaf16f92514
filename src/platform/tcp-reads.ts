/**
 * The TCP relay's reads in batches, through the addon's epoll set (src/native/tcp_reads.c says
 * why and how). Each end that reads this way has a slot: a small number the native side files
 * its reads under. When sockets are readable the addon reads each once into its end's buffer and
 * calls onBatch once with the results; each goes to its end as a libuv read would have (readLanded,
 * readFailed), so TcpEnd and the relay behave the same on either path.
 *
 * Used wherever the addon is built, unless PACKETPONY_TCP_SEND_NOW=0 (allowTcpAddon(false), below:
 * then every TCP read and write goes through Node's own stream calls, the path where the addon is
 * missing).
 */
import { nativeAddon, type NativeAddon } from '../native/addon.js';

/** Who a slot's reads go to (a TcpEnd). */
export interface ReadTarget {
  /** `nread` bytes landed in the slot's buffer; returns the buffer for the next read, if it changes. */
  readLanded(nread: number): Uint8Array | undefined;
  /** End of stream (UV_EOF) or a read error (a negative errno); reading has stopped. */
  readFailed(status: number): void;
}

/** Results handed over per call into JavaScript at most (sockets read per turn, per round). */
const CAPACITY = 1024;

export class BatchedReads {
  readonly #addon: NativeAddon;
  readonly #table: Int32Array;
  readonly #targets: (ReadTarget | null)[] = [];
  readonly #free: number[] = [];
  /** Slots forgotten during a batch: reused only after it, as later entries may still name them. */
  readonly #retired: number[] = [];
  #inBatch = false;

  constructor(addon: NativeAddon) {
    this.#addon = addon;
    this.#table = new Int32Array(addon.tcpReadsOpen(this.#onBatch, CAPACITY));
  }

  /** Starts reading `fd` into `buffer` for `target`. Returns its slot, or a negative errno. */
  watch(target: ReadTarget, fd: number, buffer: Uint8Array): number {
    let slot = this.#free.pop();
    if (slot === undefined) {
      slot = this.#targets.length;
      this.#targets.push(null);
    }
    const err = this.#addon.tcpReadStart(slot, fd, buffer);
    if (err !== 0) {
      this.#free.push(slot);
      return err;
    }
    this.#targets[slot] = target;
    return slot;
  }

  /** Reads again after pause(). Returns 0 or a negative errno. */
  resume(slot: number, fd: number): number {
    return this.#addon.tcpReadStart(slot, fd, null);
  }

  pause(slot: number): void {
    this.#addon.tcpReadStop(slot);
  }

  /** The slot's next reads go to `buffer`. */
  readInto(slot: number, buffer: Uint8Array): void {
    this.#addon.tcpReadInto(slot, buffer);
  }

  /**
   * No more reads for the slot. `closed`: its socket's descriptor was just closed (which took it
   * out of the epoll set: no system call); otherwise call while the descriptor is still open.
   */
  forget(slot: number, closed = false): void {
    this.#addon.tcpReadForget(slot, closed);
    this.#targets[slot] = null;
    (this.#inBatch ? this.#retired : this.#free).push(slot);
  }

  /** Slots in use (for tests). */
  get watching(): number {
    return this.#targets.length - this.#free.length - this.#retired.length;
  }

  readonly #onBatch = (count: number): void => {
    const table = this.#table;
    const targets = this.#targets;
    this.#inBatch = true;
    try {
      for (let i = 0; i < count; i++) {
        const slot = table[2 * i]!;
        const result = table[2 * i + 1]!;
        const target = targets[slot];
        // Forgotten by an earlier entry's handling (its connection closed): the read is dropped
        // with the connection, as it would be in the socket's buffer.
        if (target === null || target === undefined) continue;
        if (result < 0) {
          target.readFailed(result);
          continue;
        }
        const next = target.readLanded(result);
        if (next !== undefined && targets[slot] === target) this.#addon.tcpReadInto(slot, next);
      }
    } finally {
      this.#inBatch = false;
      const retired = this.#retired;
      while (retired.length > 0) this.#free.push(retired.pop()!);
    }
  };
}

let addonAllowed = true;

/**
 * Whether the TCP relay may use the addon: false is PACKETPONY_TCP_SEND_NOW=0, which the child
 * reads at start and its TCP listener passes here (src/proxy/path-switches.ts), putting every TCP
 * read and write back on Node's own calls. Call before the first connection: the batched reads and
 * the direct calls are each chosen once per process, when first used.
 */
export function allowTcpAddon(allowed: boolean): void {
  addonAllowed = allowed;
}

export function tcpAddonAllowed(): boolean {
  return addonAllowed;
}

/**
 * The addon for the TCP relay (its direct socket calls in socket-calls.ts, its batched reads here),
 * or null: not built, or not allowed (allowTcpAddon(false)).
 */
export function tcpAddon(): NativeAddon | null {
  return addonAllowed ? nativeAddon() : null;
}

let opened = false;
let reads: BatchedReads | null = null;
let unavailable = '';

/**
 * The process's batched reads, or null where TCP reads go through Node (see the header; also when
 * the epoll set cannot be made, say with the descriptor table full at the first connection: the
 * process then reads through Node for good, which behaves the same).
 */
export function batchedReads(): BatchedReads | null {
  if (opened) return reads;
  opened = true;
  const addon = tcpAddon();
  if (addon === null) return reads;
  const made = openBatchedReads(addon);
  if (typeof made === 'string') unavailable = made;
  else reads = made;
  return reads;
}

/** Batched reads over `addon`, or why they cannot be had (the epoll set could not be made). */
export function openBatchedReads(addon: NativeAddon): BatchedReads | string {
  try {
    return new BatchedReads(addon);
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

/** Why batchedReads() answered null although the addon is there ('' otherwise; for tests and reports). */
export function batchedReadsUnavailable(): string {
  return unavailable;
}
