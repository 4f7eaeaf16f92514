/**
 * The hot path of the TCP relay: one direction of one connection. Reads `src` into a static buffer
 * (or, for a client socket that could not be taken over, 'data' events), meters and counts each
 * chunk, writes it to `dst`, and stops reading while that write is pending, so at most one buffer
 * per direction is held in user space. See tcp-relay.ts for the rules it serves.
 *
 * Per chunk: no closure, no clock read, no logging; the only allocation is, when a read is shorter
 * than the buffer, a view of it. Writes go straight to the destination's handle (HandleWriter in
 * stream-handle.ts; socket.write() where that is not available), so a pending write shows in
 * pendingWriteBytes(dst), not in dst.writableLength.
 *
 * Buffers come from a small pool and go back to it when the relay has finished (both sockets
 * closed: no read can land in the buffer and no write still points into it). Profiled at a few
 * thousand new connections per second, allocating two fresh 64 KiB buffers per connection cost
 * about 4 % of the child's CPU on its own, plus the garbage collections that much external memory
 * churn triggers, and the page faults of touching fresh memory.
 */
import type net from 'node:net';
import type { ListenerStats } from '../telemetry/stats.js';
import { HandleWriter, WRITE_DONE, WRITE_PENDING, pendingWriteBytes, startReading, writeError } from './stream-handle.js';

/** Which way bytes move; the values are the metrics' `direction` label values. */
export type RelayDirection = 'sent' | 'received';

/**
 * Called per chunk read, before it is forwarded, with its size. Returns METER_OK (0) to go on, a
 * positive number of ms to forward this chunk and then stop reading this direction for that long,
 * or METER_DROP (-1) to end the connection without forwarding the chunk. Any other negative value
 * is treated as "go on" (the policy's CONSUME_VIOLATION: the caller logs it).
 */
export type Meter = (bytes: number, direction: RelayDirection) => number;

export const METER_OK = 0;
export const METER_DROP = -1;

/** The pooled buffer size: the relay's default. Other sizes are allocated and left to the GC. */
const POOLED_SIZE = 64 * 1024;
/** At most this many idle buffers are kept (4 MiB): enough to absorb bursts of short connections. */
const MAX_POOLED = 64;
const pool: Buffer[] = [];
const EMPTY = Buffer.alloc(0);

function takeBuffer(size: number): Buffer {
  if (size === POOLED_SIZE) {
    const pooled = pool.pop();
    if (pooled !== undefined) return pooled;
  }
  return Buffer.allocUnsafeSlow(size);
}

/** Idle buffers in the pool (for tests). */
export function pooledBuffers(): number {
  return pool.length;
}

/** What a Flow needs from its relay. */
export interface FlowOwner {
  /** The relay is ending: read and forward nothing more. */
  readonly closing: boolean;
  readonly meter: Meter | undefined;
  readonly stats: ListenerStats;
  /** The meter said drop. */
  drop(direction: RelayDirection): void;
}

export class Flow {
  readonly relay: FlowOwner;
  /** client → target */
  readonly up: boolean;
  readonly direction: RelayDirection;
  buf: Buffer;
  /** Static-buffer reads (handle driven) vs 'data' events (stream driven). */
  staticMode = true;
  src: net.Socket | null = null;
  /** null until the target is connected (for the client → target direction). */
  dst: net.Socket | null = null;
  bytes = 0;
  /** A write to dst has not completed; reading src is stopped until it does. */
  pending = false;
  /** Writes that completed after having been pending (progress, for the timer). */
  completions = 0;
  /** src sent its FIN. */
  eof = false;
  throttled = false;
  /** Data read before the target was connected, forwarded first. */
  early: Buffer[] | null = null;
  #throttleTimer: NodeJS.Timeout | null = null;
  #throttleMs = 0;
  // The timer's previous look at this direction's pending write.
  #seenCompletions = 0;
  #seenQueue = -1;
  stuckSince = -1;

  constructor(relay: FlowOwner, up: boolean, bufferSize: number) {
    this.relay = relay;
    this.up = up;
    this.direction = up ? 'sent' : 'received';
    this.buf = takeBuffer(bufferSize);
  }

  /**
   * Gives the buffer back to the pool. Only once both sockets have closed: until then a read may
   * still land in it or a pending write may still point into it. The flow must not run again.
   */
  release(): void {
    const buf = this.buf;
    if (buf.length === 0) return;
    this.buf = EMPTY;
    this.early = null;
    if (buf.length === POOLED_SIZE && pool.length < MAX_POOLED) pool.push(buf);
  }

  /** The static-buffer read callback: returns whether to keep reading. */
  readonly onStaticRead = (nread: number): boolean => {
    const buf = this.buf;
    return this.forward(nread === buf.length ? buf : buf.subarray(0, nread), nread, false);
  };

  readonly onData = (chunk: Buffer): void => {
    if (!this.forward(chunk, chunk.length, true)) this.src?.pause();
  };

  /**
   * Meters, counts and writes one chunk. `owned`: the chunk is ours to keep (not the static
   * buffer). Returns whether src may be read again right away.
   */
  forward(chunk: Buffer, n: number, owned: boolean): boolean {
    const relay = this.relay;
    if (relay.closing) return false;
    const dst = this.dst;
    if (dst === null) {
      // Read before the target is up (only if someone restarted reading): keep a copy for later.
      (this.early ??= []).push(owned ? chunk : Buffer.from(chunk));
      return false;
    }
    const meter = relay.meter;
    if (meter !== undefined) {
      const verdict = meter(n, this.direction);
      if (verdict > 0) this.#throttle(verdict);
      else if (verdict === METER_DROP) {
        relay.drop(this.direction);
        return false;
      }
    }
    this.bytes += n;
    if (this.up) relay.stats.bytesSent += n;
    else relay.stats.bytesReceived += n;
    const writer = this.#writer;
    if (writer === null) {
      dst.write(chunk, this.onWritten);
      if (dst.writableLength !== 0) {
        this.pending = true;
        return false;
      }
      return !this.throttled;
    }
    const result = writer.write(dst, chunk);
    if (result === WRITE_DONE) return !this.throttled;
    if (result === WRITE_PENDING) {
      this.pending = true;
      return false;
    }
    // What net.Socket does with a failed write: destroy the socket with the error, which the
    // relay's 'error' listener turns into a counted, reported abort.
    dst.destroy(writeError(result));
    return false;
  }

  /** A pending direct write finished (or failed: status < 0). */
  readonly #onDirectWritten = (status: number): void => {
    if (status < 0) {
      // ECANCELED when the socket was closed under it; otherwise a real write error.
      if (!this.relay.closing && this.dst !== null) this.dst.destroy(writeError(status));
      return;
    }
    if (!this.pending) return;
    this.pending = false;
    this.completions++;
    if (!this.throttled) this.resume();
  };

  /** Writes to dst's handle directly (stream-handle.ts); null: through dst.write(). */
  readonly #writer: HandleWriter | null = HandleWriter.create(this.#onDirectWritten);

  /** Write callback. Sync-completed writes land here too, later, with nothing pending: no-op. */
  readonly onWritten = (err?: Error | null): void => {
    if (err != null || !this.pending || this.dst === null || this.dst.writableLength !== 0) return;
    this.pending = false;
    this.completions++;
    if (!this.throttled) this.resume();
  };

  readonly onEnd = (): void => {
    this.eof = true;
    if (this.dst !== null && !this.relay.closing) this.dst.end();
  };

  resume(): void {
    const src = this.src;
    if (src === null || this.eof || this.relay.closing) return;
    if (!this.staticMode) {
      src.resume();
      return;
    }
    const err = startReading(src);
    if (err !== null) src.destroy(err);
  }

  #throttle(ms: number): void {
    this.throttled = true;
    if (this.#throttleTimer !== null && this.#throttleMs === ms) {
      this.#throttleTimer.refresh();
      return;
    }
    if (this.#throttleTimer !== null) clearTimeout(this.#throttleTimer);
    this.#throttleMs = ms;
    // Kept referenced: a throttled relay reads nothing and may have no other active handle.
    this.#throttleTimer = setTimeout(this.#onThrottleEnd, ms);
  }

  readonly #onThrottleEnd = (): void => {
    this.throttled = false;
    if (!this.pending) this.resume();
  };

  /**
   * For the relay's timer: whether this direction made write progress since the previous look.
   * Keeps `stuckSince` (when the current pending write was last seen progressing; -1: none).
   */
  observe(now: number): boolean {
    const completions = this.completions;
    const moved = completions !== this.#seenCompletions;
    this.#seenCompletions = completions;
    if (!this.pending || this.dst === null) {
      this.stuckSince = -1;
      return moved;
    }
    const queue = pendingWriteBytes(this.dst);
    if (this.stuckSince < 0 || moved || queue !== this.#seenQueue) {
      // A new pending write (so data was read since the last look), or progress on the old one.
      this.#seenQueue = queue;
      this.stuckSince = now;
      return true;
    }
    return false;
  }

  /** A write to dst has been pending without progress for `ms` (as of the last observe()). */
  isStuck(now: number, ms: number): boolean {
    return this.pending && this.stuckSince >= 0 && now - this.stuckSince >= ms;
  }

  stop(): void {
    if (this.#throttleTimer !== null) clearTimeout(this.#throttleTimer);
    this.#throttleTimer = null;
    this.throttled = false;
  }
}
