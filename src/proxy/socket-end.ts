/**
 * The relay's TcpEnd over net.Socket, with public APIs only: the path where Node's TCP internals
 * are missing or denied (process.binding under --permission), or ruled out with
 * PACKETPONY_PUBLIC_PATH=1. Same behaviour as the native ends (src/platform/native-tcp-end.ts),
 * slower: a net.Socket is a full Duplex stream per end, and each read is Node's own buffer,
 * copied here into the reader's.
 *
 * How the contract (src/platform/tcp-end.ts) is kept:
 * - Reads: the socket stays paused (pauseOnConnect, or pause() before a dial) except while the
 *   sink reads. A dialed socket reads straight into the sink's buffers (net.Socket's `onread`
 *   option: the buffer asked for after each read, as the native ends do), so the sink sees reads
 *   no larger than the buffer (and read limits) it gave, and nothing is allocated per read.
 *   Accepted sockets cannot have `onread` (net.Server makes them): each 'data' chunk, a buffer
 *   Node allocated, is copied into the sink's buffer, as many reads as it takes. When the sink
 *   stops in the middle of a chunk, the rest is held here, the socket is paused, and the rest comes
 *   first when reading starts again; an end of stream or a close that Node reports meanwhile waits
 *   behind it. Node's stream buffers at most its high-water mark more before it stops reading the
 *   socket, so backpressure reaches the peer as before.
 * - Writes: socket.write() of the chunk; when the kernel took it at once (the stream's length is
 *   back to 0 before write returns), WRITE_DONE; otherwise WRITE_PENDING until that write's
 *   callback. The stream keeps the buffer while it is pending.
 * - end(): socket.end() (Node's shutdown after the queued writes); 'finish' is our FIN sent.
 *   Sockets are half-open (allowHalfOpen): the peer's FIN ends only our reading.
 * - reset(): resetAndDestroy() (public since Node 16.17/18.3), with the native end's guard: not
 *   while a shutdown is in progress (libuv refuses it then, and the socket would never close);
 *   it follows once the FIN is out.
 * - Errors are Node's own (same codes, syscalls and messages as the native path gives).
 *
 * - wasReset(): libuv reports a reset that arrives right behind data as an end of stream; the
 *   native path tells them apart with getpeername on the descriptor, which net.Socket hides (and
 *   its remote address is cached); here a zero-length write asks the kernel instead (see there).
 *
 * What the public API cannot show, and so differs:
 * - descriptor and unsentBytes(): unknown (-1), so a transfer cut by the bandwidth cap waits a
 *   fixed grace before its reset and its close event says delivery is unconfirmed (as without
 *   the addon), and a full descriptor table is seen only by the listener's timer.
 * - Allocation: an accepted socket's reads are buffers Node allocates (64 KiB each under bulk
 *   data), copied into the sink's; a minor collection every 8 MiB of them keeps the garbage from
 *   growing the child (see COLLECT_AFTER). Dialed sockets read into the sink's buffers.
 * - pendingWriteBytes: the stream's, which shrinks when a write completes, not as the kernel takes
 *   pieces of it; a write_timeout can thus cut a reader that takes less than one read (at most
 *   64 KiB, Node's read size) per timeout.
 */
import net from 'node:net';
import { WRITE_DONE, WRITE_PENDING, type EndWriter, type ReadSink, type TcpEnd, type TcpEnds } from '../platform/tcp-end.js';

const UV_EBADF = -9;
const UV_ECANCELED = -125;
const EMPTY = Buffer.alloc(0);
/**
 * Where a dialed socket's first read lands: net.Socket asks for the read buffer when it creates its
 * handle, inside connect(), before the relay has given its sink. Copied out at once (that read
 * takes the 'data' path), so one buffer serves every socket.
 */
const FIRST_READ = Buffer.alloc(64 * 1024);

/**
 * An accepted socket's reads are buffers Node allocates (net.Server gives no `onread`), garbage
 * that V8 collects only once its external memory has grown by tens of MiB. So after every
 * COLLECT_AFTER bytes read that way, a minor collection is asked for (children run with
 * --expose-gc, for the memory reclaimer); it frees those buffers, young as they are, for little
 * CPU (the figures: docs/performance.md, "Measurements behind the code").
 */
const COLLECT_AFTER = 8 * 1024 * 1024;
const minorGc: (() => void) | null = (() => {
  const gc = (globalThis as { gc?: unknown }).gc;
  return typeof gc === 'function' ? () => (gc as (options: { type: string }) => void)({ type: 'minor' }) : null;
})();
let allocatedReads = 0;

function noop(): void {}

export class SocketEnd implements TcpEnd {
  readonly socket: net.Socket;
  onConnect: () => void = noop;
  onEnd: () => void = noop;
  onError: (err: NodeJS.ErrnoException) => void = noop;
  onClose: () => void = noop;
  readableEnded = false;
  writableEnded = false;
  writableFinished = false;
  destroyed = false;
  closed = false;
  readonly descriptor = -1;

  #sink: ReadSink | null = null;
  /** The sink's current buffer. */
  #buffer: Uint8Array | null = null;
  #reading = false;
  /** Part of a chunk the sink stopped in the middle of, from #heldAt on. */
  #held: Buffer | null = null;
  #heldAt = 0;
  /** Node reported the end of stream, or the close, while a held chunk waits. */
  #endWaits = false;
  #closeWaits = false;
  #drainQueued = false;
  #resetAfterFinish = false;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('finish', this.#onFinish);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
    socket.on('connect', this.#onConnect);
  }

  static dial(address: string, port: number, family: 4 | 6): SocketEnd {
    let end: SocketEnd | null = null;
    const socket = net.connect({
      host: address,
      port,
      family,
      allowHalfOpen: true,
      onread: {
        buffer: () => (end === null ? FIRST_READ : end.#buffer ?? FIRST_READ),
        callback: (nread: number, buffer: Uint8Array) => end!.#landed(nread, buffer),
      },
    });
    // Paused before it connects: nothing is read until the relay asks.
    socket.pause();
    end = new SocketEnd(socket);
    return end;
  }

  /** A read of a dialed socket (onread). Returns whether to read on. */
  #landed(nread: number, buffer: Uint8Array): boolean {
    if (this.closed) return false;
    const sink = this.#sink;
    if (buffer !== this.#buffer || sink === null || !this.#reading) {
      // The first read (FIRST_READ), or one that came after all: as a chunk of Node's.
      this.#onData(Buffer.from(buffer.subarray(0, nread)));
      return this.#reading;
    }
    const more = sink.onStaticRead(nread);
    if (!more) this.stopReading();
    if (this.closed) return false;
    const next = this.#sink!.nextBuffer();
    if (next !== null) this.#buffer = next;
    return more && this.#reading;
  }

  get reading(): boolean {
    return this.#reading;
  }

  get pendingWriteBytes(): number {
    return this.destroyed ? 0 : this.socket.writableLength;
  }

  unsentBytes(): number {
    return -1;
  }

  remote(): { address: string; port: number; family: string } | null {
    const { remoteAddress, remotePort, remoteFamily } = this.socket;
    if (this.destroyed || remoteAddress === undefined || remotePort === undefined) return null;
    return { address: remoteAddress, port: remotePort, family: remoteFamily ?? '' };
  }

  local(): { address: string; port: number; family: string } | null {
    const { localAddress, localPort, localFamily } = this.socket;
    if (this.destroyed || localAddress === undefined || localPort === undefined) return null;
    return { address: localAddress, port: localPort, family: localFamily ?? '' };
  }

  setNoDelay(): void {
    if (!this.destroyed) this.socket.setNoDelay(true);
  }

  setKeepAlive(ms: number): void {
    if (!this.destroyed) this.socket.setKeepAlive(true, ms);
  }

  setSink(sink: ReadSink): void {
    this.#sink = sink;
    const buffer = sink.nextBuffer();
    if (buffer !== null) this.#buffer = buffer;
  }

  startReading(): NodeJS.ErrnoException | null {
    if (this.#reading || this.readableEnded || this.destroyed || this.#buffer === null) return null;
    this.#reading = true;
    if (this.#held !== null || this.#endWaits || this.#closeWaits) {
      // What is held comes first, from the event loop as a read would (never inside this call).
      if (!this.#drainQueued) {
        this.#drainQueued = true;
        setImmediate(this.#drainHeld);
      }
      return null;
    }
    this.socket.resume();
    return null;
  }

  stopReading(): void {
    if (!this.#reading) return;
    this.#reading = false;
    if (!this.destroyed) this.socket.pause();
  }

  readonly #drainHeld = (): void => {
    this.#drainQueued = false;
    if (!this.#reading) return;
    const held = this.#held;
    if (held !== null) {
      this.#held = null;
      if (!this.#deliver(held, this.#heldAt)) return;
    }
    if (this.#endWaits) {
      this.#endWaits = false;
      this.#ended();
    }
    if (this.#closeWaits) {
      this.#closeWaits = false;
      this.#closed();
      return;
    }
    if (this.#reading && !this.destroyed) this.socket.resume();
  };

  /** Copies chunk[from…] into the sink's buffers. Returns false when part of it is held. */
  #deliver(chunk: Buffer, from: number): boolean {
    let at = from;
    while (at < chunk.length) {
      const sink = this.#sink;
      const buffer = this.#buffer;
      if (!this.#reading || sink === null || buffer === null || buffer.length === 0) {
        this.#hold(chunk, at);
        return false;
      }
      const n = Math.min(buffer.length, chunk.length - at);
      chunk.copy(buffer, 0, at, at + n);
      at += n;
      const more = this.#sink!.onStaticRead(n);
      if (!more) this.stopReading();
      if (this.closed) return false;
      // The sink may have changed during the read (a header reader handing over).
      const next = this.#sink!.nextBuffer();
      if (next !== null) this.#buffer = next;
    }
    return true;
  }

  #hold(chunk: Buffer, at: number): void {
    if (this.#held === null) {
      this.#held = chunk;
      this.#heldAt = at;
      return;
    }
    // Node delivered more after a pause (rare): keep both, in order.
    this.#held = Buffer.concat([this.#held.subarray(this.#heldAt), chunk.subarray(at)]);
    this.#heldAt = 0;
  }

  readonly #onData = (chunk: Buffer): void => {
    if (this.closed) return;
    if (minorGc !== null && (allocatedReads += chunk.length) >= COLLECT_AFTER) {
      allocatedReads = 0;
      minorGc();
    }
    if (this.#held !== null) {
      this.#hold(chunk, 0);
      return;
    }
    this.#deliver(chunk, 0);
  };

  readonly #onEnd = (): void => {
    if (this.#held !== null) {
      this.#endWaits = true;
      return;
    }
    this.#ended();
  };

  #ended(): void {
    this.#reading = false;
    if (this.destroyed) return;
    this.readableEnded = true;
    this.onEnd();
    if (this.writableFinished) this.close();
  }

  readonly #onFinish = (): void => {
    this.writableFinished = true;
    if (this.#resetAfterFinish) {
      this.#resetAfterFinish = false;
      this.socket.resetAndDestroy();
    } else if (this.readableEnded) {
      this.close();
    }
  };

  readonly #onConnect = (): void => {
    if (!this.destroyed) this.onConnect();
  };

  readonly #onError = (err: NodeJS.ErrnoException): void => {
    if (!this.destroyed) this.onError(err);
  };

  end(): void {
    if (this.destroyed || this.writableEnded) return;
    this.writableEnded = true;
    this.socket.end();
  }

  close(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.#reading = false;
    this.socket.destroy();
    this.#closeIfWaiting();
  }

  /** Node closed the socket while bytes were held, and the owner now closes it: the close is due. */
  #closeIfWaiting(): void {
    if (!this.#closeWaits) return;
    this.#closeWaits = false;
    process.nextTick(() => this.#closed());
  }

  reset(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.#reading = false;
    this.#closeIfWaiting();
    const socket = this.socket;
    if (this.writableEnded && !this.writableFinished) {
      // As the native end: a reset during a shutdown waits for it, unless writes hold it up.
      if (socket.writableLength > 0) socket.destroy();
      else {
        this.#resetAfterFinish = true;
        socket.pause();
      }
      return;
    }
    socket.resetAndDestroy();
  }

  /**
   * A zero-length write: the kernel sends nothing on a connection that is only half-closed, and
   * refuses it (ECONNRESET, which the stream keeps as `errored` before write returns) on one a
   * reset closed. Only while our write half is open and nothing of ours is queued (a write behind
   * others is not tried at once): otherwise the end of stream stands, as it does natively.
   */
  wasReset(): boolean {
    const socket = this.socket;
    if (this.writableEnded || this.destroyed || socket.writableLength > 0) return false;
    socket.write(EMPTY);
    return socket.errored !== null && socket.errored !== undefined;
  }

  readonly #onClose = (): void => {
    if (this.#held !== null && !this.destroyed) {
      // Closed by Node (both halves ended) with bytes still held: they and the end go first.
      this.#closeWaits = true;
      return;
    }
    this.#closed();
  };

  #closed(): void {
    if (this.closed) return;
    this.closed = true;
    this.destroyed = true;
    this.#reading = false;
    const onClose = this.onClose;
    this.onConnect = this.onEnd = this.onClose = noop;
    this.onError = noop;
    this.#sink = null;
    this.#buffer = null;
    this.#held = null;
    onClose();
  }
}

/**
 * One relay direction's writes over net.Socket. Callbacks come in the order of the writes; the
 * one that matters is that of the write that went pending (earlier ones completed at once).
 */
export class SocketWriter implements EndWriter {
  readonly #onComplete: (status: number) => void;
  #issued = 0;
  #answered = 0;
  /** The number of the write that is pending; 0: none. */
  #pendingWrite = 0;

  constructor(onComplete: (status: number) => void) {
    this.#onComplete = onComplete;
  }

  get idle(): boolean {
    return this.#pendingWrite === 0;
  }

  write(end: TcpEnd, buffer: Uint8Array, length = buffer.length): number {
    const socketEnd = end as SocketEnd;
    const socket = socketEnd.socket;
    if (socketEnd.destroyed || socket.destroyed || !socket.writable) return UV_EBADF;
    socket.write(length === buffer.length ? buffer : buffer.subarray(0, length), this.#answer);
    this.#issued++;
    if (socket.writableLength === 0) return WRITE_DONE;
    this.#pendingWrite = this.#issued;
    return WRITE_PENDING;
  }

  readonly #answer = (err?: Error | null): void => {
    this.#answered++;
    if (this.#answered !== this.#pendingWrite) return;
    this.#pendingWrite = 0;
    const errno = (err as NodeJS.ErrnoException | null | undefined)?.errno;
    this.#onComplete(err === null || err === undefined ? 0 : typeof errno === 'number' && errno < 0 ? errno : UV_ECANCELED);
  };
}

/** The relay's ends over net.Socket (see src/platform/tcp-end.ts). */
export const socketEnds: TcpEnds = {
  description: 'net.Socket (public API)',
  dial: (address, port, family) => SocketEnd.dial(address, port, family),
  writer: (onComplete) => new SocketWriter(onComplete),
  createServer: () => net.createServer({ allowHalfOpen: true, pauseOnConnect: true }),
  accept: (server, onConnection) => {
    // Accept errors reach the server's 'error' listeners, which the listener has.
    server.on('connection', (socket: net.Socket) => onConnection(new SocketEnd(socket)));
  },
  presetAcceptedOptions: () => false,
  prepare: noop,
};
