/**
 * The hot path of the TCP relay: one direction of one connection. Reads `src` into a static buffer,
 * meters and counts each chunk, writes it to `dst`, and stops reading while that write is pending,
 * so at most one buffer per direction is held in user space. See tcp-relay.ts for the rules it
 * serves, src/platform/tcp-end.ts for the ends.
 *
 * Per chunk: no closure, no clock read, no logging, no allocation (a view of the buffer only when
 * the kernel does not take a chunk whole, or without the addon when a read is shorter than the
 * buffer). Writes go straight to the destination's socket (HandleWriter), so a pending write shows
 * in dst.pendingWriteBytes.
 *
 * Buffer size adapts to the traffic (read-buffers.ts says why): a direction reads into its small
 * buffer until a read fills it, then into a large one, which it gives back after SHRINK_AFTER short
 * reads in a row. The switch rides on the end's buffer question (`nextBuffer`, asked after each
 * read; what the read returns to Node becomes the native read buffer), and is safe at any read: the write of the previous buffer has completed (reading stops while one
 * is pending), and a large buffer still held by the write just made goes back to the pool once
 * that write completes.
 */
import type { ListenerStats } from '../telemetry/stats.js';
import { SMALL_SIZE, giveLarge, giveSmall, takeLarge, takeSmall } from './read-buffers.js';
import { WRITE_DONE, WRITE_PENDING, socketError, type ReadSink, type TcpEnd } from '../platform/tcp-end.js';
import { tcpEnds } from './tcp-path.js';

/** Which way bytes move; the values are the metrics' `direction` label values. */
export type RelayDirection = 'sent' | 'received';

/**
 * Called per chunk read, before it is forwarded, with its size. Returns METER_OK (0) to go on, a
 * positive number of ms to forward this chunk and then stop reading this direction for that long,
 * or METER_DROP (-1) to end the connection without forwarding the chunk. Any other negative value
 * is treated as "go on" (the policy's CONSUME_VIOLATION: the caller logs it).
 */
export type Meter = (bytes: number, direction: RelayDirection) => number;

/**
 * Sizes a connection's reads (a throttled one's): called by each direction with the room in the
 * buffer its next read lands in and what it was granted last time, it answers what this read may
 * take; room 0 gives the last grant back (policy's ReadLimit).
 */
export type ReadLimit = (room: number, previous: number) => number;

export const METER_OK = 0;
export const METER_DROP = -1;

/**
 * Reads in a row that would have fitted in the small buffer before a large one is given back: a
 * request/response exchange with some large messages keeps it, an interactive session drops it.
 */
export const SHRINK_AFTER = 8;
const EMPTY = Buffer.alloc(0);

/** What a Flow needs from its relay. */
export interface FlowOwner {
  /** The relay is ending: read and forward nothing more. */
  readonly closing: boolean;
  readonly meter: Meter | undefined;
  /** Sizes the reads (a throttled connection's paced reads); undefined: no limit. */
  readonly readLimit: ReadLimit | undefined;
  readonly stats: ListenerStats;
  /** The meter said drop. */
  drop(direction: RelayDirection): void;
  /** A write to `end` failed: the relay ends the connection, counting the error. */
  failed(end: TcpEnd, err: NodeJS.ErrnoException): void;
}

export class Flow implements ReadSink {
  readonly relay: FlowOwner;
  /** client → target */
  readonly up: boolean;
  readonly direction: RelayDirection;
  src: TcpEnd | null = null;
  /** null until the target is connected (for the client → target direction). */
  dst: TcpEnd | null = null;
  bytes = 0;
  /** A write to dst has not completed; reading src is stopped until it does. */
  pending = false;
  /** Writes that completed after having been pending (progress, for the timer). */
  completions = 0;
  /** src sent its FIN. */
  eof = false;
  throttled = false;
  /** Data read before the relay started (after a PROXY header), forwarded first. */
  early: Buffer[] | null = null;
  #throttleTimer: NodeJS.Timeout | null = null;
  #throttleMs = 0;
  // The timer's previous look at this direction's pending write.
  #seenCompletions = 0;
  #seenQueue = -1;
  stuckSince = -1;

  /** The buffer reads go to (the small or the large one); what the handle was last given. */
  buf: Buffer;
  #handleBuf: Buffer | null = null;
  /** The last limited view of a buffer (nextBuffer). */
  #view: Buffer | null = null;
  #small: Buffer;
  #large: Buffer | null = null;
  /** A large buffer given up while a write from it was pending: pooled once that write completes. */
  #retired: Buffer | null = null;
  #shortReads = 0;
  /** The large buffer may be a bulk one (read-buffers.ts). */
  readonly #bulk: boolean;
  readonly #readLimit: ReadLimit | undefined;
  /** What #readLimit granted the read now pending: given back when it completes (or never comes). */
  #granted = 0;

  constructor(relay: FlowOwner, up: boolean, bulk: boolean) {
    this.relay = relay;
    this.up = up;
    this.direction = up ? 'sent' : 'received';
    this.#bulk = bulk;
    this.#readLimit = relay.readLimit;
    this.nextBuffer = this.#readLimit === undefined ? this.#nextBuffer : () => this.#nextLimitedBuffer();
    this.onStaticRead = this.#readLimit === undefined ? this.#onStaticRead : (nread) => this.#onLimitedRead(nread);
    this.#small = takeSmall();
    this.buf = this.#small;
  }

  /**
   * Gives the buffers back to the pools. Only once both sockets have closed: until then a read may
   * still land in one or a pending write may still point into it. The flow must not run again.
   */
  release(): void {
    if (this.buf === EMPTY) return;
    if (this.#granted !== 0) this.#granted = this.#readLimit!(0, this.#granted);
    this.buf = EMPTY;
    this.early = null;
    this.#view = null;
    giveSmall(this.#small);
    this.#small = EMPTY;
    if (this.#large !== null) giveLarge(this.#large);
    if (this.#retired !== null) giveLarge(this.#retired);
    this.#large = this.#retired = null;
  }

  /**
   * ReadSink: asked for the first buffer, then after each read; null keeps the current one. A
   * relay with a read limit gets #nextLimitedBuffer instead, so that the others' per-read path
   * stays as small as it was (it is inlined into the read callback).
   */
  readonly nextBuffer: () => Buffer | null;

  readonly #nextBuffer = (): Buffer | null => {
    const buf = this.buf;
    if (buf === this.#handleBuf) return null;
    this.#handleBuf = buf;
    return buf;
  };

  #nextLimitedBuffer(): Buffer | null {
    let buf = this.buf;
    const limit = (this.#granted = this.#readLimit!(buf.length, this.#granted));
    if (limit < buf.length) buf = this.#limitedView(buf, limit);
    if (buf === this.#handleBuf) return null;
    this.#handleBuf = buf;
    return buf;
  }

  /**
   * The first `limit` bytes of `buf`, for a read that may take no more: the view starts where buf
   * does, so the read lands where onStaticRead looks. Kept while the limit stays (a paced
   * connection's reads all have the same), so that paced reads allocate nothing either.
   */
  #limitedView(buf: Buffer, limit: number): Buffer {
    const view = this.#view;
    if (view !== null && view.length === limit && view.buffer === buf.buffer && view.byteOffset === buf.byteOffset) return view;
    return (this.#view = buf.subarray(0, limit));
  }

  /** A new socket is about to read for this direction (a failover's next attempt): it has no buffer yet. */
  newSource(): void {
    this.#handleBuf = null;
  }

  /**
   * ReadSink: `nread` bytes are in `buf`; returns whether to keep reading. A relay with a read
   * limit gets #onLimitedRead instead, for the same reason as #nextLimitedBuffer.
   */
  readonly onStaticRead: (nread: number) => boolean;

  /**
   * A throttled read's grant goes back before its bytes are metered: what the address's other
   * readers hold is then exactly what the meter keeps clear of the cap.
   */
  #onLimitedRead(nread: number): boolean {
    if (this.#granted !== 0) this.#granted = this.#readLimit!(0, this.#granted);
    return this.#onStaticRead(nread);
  }

  readonly #onStaticRead = (nread: number): boolean => {
    const buf = this.buf;
    const more = this.forward(buf, nread, false);
    if (this.relay.closing) return more;
    if (buf === this.#small) {
      if (nread === buf.length) this.#grow();
    } else if (nread > SMALL_SIZE) {
      this.#shortReads = 0;
    } else if (++this.#shortReads >= SHRINK_AFTER) {
      this.#shrink();
    }
    return more;
  };

  /** Reads fill the small buffer: read into a large one from the next read on. */
  #grow(): void {
    this.#large ??= takeLarge(this.#bulk);
    this.buf = this.#large;
    this.#shortReads = 0;
  }

  /** Reads have been short for a while: back to the small buffer; the large one to the pool. */
  #shrink(): void {
    const large = this.#large;
    this.buf = this.#small;
    this.#large = null;
    this.#shortReads = 0;
    if (large === null) return;
    // The write just made from it may still be pending (then it holds the buffer).
    if (this.pending) this.#retired = large;
    else giveLarge(large);
  }

  /** The write that held a given-up large buffer has completed. */
  #returnRetired(): void {
    giveLarge(this.#retired!);
    this.#retired = null;
  }

  /**
   * Meters, counts and writes one chunk, buf[0, n). `owned`: buf is the chunk, ours to keep (not
   * the static buffer). Returns whether src may be read again right away.
   */
  forward(buf: Buffer, n: number, owned: boolean): boolean {
    const relay = this.relay;
    if (relay.closing) return false;
    const dst = this.dst;
    if (dst === null) {
      // Read before the target is up (only if someone restarted reading): keep a copy for later.
      (this.early ??= []).push(owned ? buf : Buffer.from(buf.subarray(0, n)));
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
    const result = this.#writer.write(dst, buf, n);
    if (result === WRITE_DONE) return !this.throttled;
    if (result === WRITE_PENDING) {
      this.pending = true;
      return false;
    }
    relay.failed(dst, socketError(result, 'write'));
    return false;
  }

  /** Writes `header` (a PROXY protocol header) to dst before any data; not metered or counted. */
  writeFirst(header: Buffer): void {
    const dst = this.dst!;
    const result = this.#writer.write(dst, header);
    if (result === WRITE_PENDING) this.pending = true;
    else if (result !== WRITE_DONE) this.relay.failed(dst, socketError(result, 'write'));
  }

  /** A pending direct write finished (or failed: status < 0). */
  readonly #onDirectWritten = (status: number): void => {
    if (status < 0) {
      // ECANCELED when the socket was closed under it; otherwise a real write error.
      if (!this.relay.closing && this.dst !== null) this.relay.failed(this.dst, socketError(status, 'write'));
      return;
    }
    if (!this.pending) return;
    this.pending = false;
    this.completions++;
    if (this.#retired !== null) this.#returnRetired();
    if (!this.throttled) this.resume();
  };

  readonly #writer = tcpEnds().writer(this.#onDirectWritten);

  readonly onEnd = (): void => {
    this.eof = true;
    if (this.dst !== null && !this.relay.closing) this.endDestination();
  };

  /**
   * Passes src's FIN on to dst, after what this direction wrote. With no write of ours waiting in
   * libuv's queue, the FIN goes at once (TcpEnd.end's direct path).
   */
  endDestination(): void {
    this.dst?.end(this.#writer.idle);
  }

  resume(): void {
    const src = this.src;
    if (src === null || this.eof || this.relay.closing) return;
    const err = src.startReading();
    if (err !== null) this.relay.failed(src, err);
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
    const queue = this.dst.pendingWriteBytes;
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
