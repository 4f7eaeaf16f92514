/**
 * One end of a relayed TCP connection, on Node's native TCP handle (tcp_wrap) with no net.Socket
 * around it: the fast implementation of the relay's TcpEnd (tcp-end.ts), taken where the
 * tcp_wrap probe says yes (tcp-wrap.ts); elsewhere src/proxy/socket-end.ts does the same over
 * net.Socket. test/unit/proxy/tcp-handle.test.ts fails first if the internals move. Its writer is
 * handle-writer.ts, the addon's direct calls socket-calls.ts, its accepts native-tcp-path.ts.
 *
 * Why not net.Socket: a relayed connection is two sockets, and each net.Socket is a full Duplex
 * stream (two state objects, an EventEmitter, its own connect and teardown machinery, events
 * emitted through process.nextTick). For a short connection that machinery was most of the child's
 * CPU (the figures: docs/performance.md, "Measurements behind the code"). The relay needs far
 * less: reads into a buffer it owns, writes that report whether the kernel took them, a shutdown,
 * a close or a reset, and four events (connected, end of stream, error, closed). TcpEnd is that.
 *
 * What it mirrors from net.Socket, so the relay keeps its semantics:
 * - Reads land in a buffer the reader gives (`useUserBuffer`, what net.connect's `onread` option
 *   uses); after each read the reader is asked for the next buffer (null: keep the current one),
 *   which Node re-points natively. readStart/readStop switch reading. With the addon, the reads
 *   are the addon's instead (tcp-reads.ts: a batch of sockets read per call into JavaScript, not
 *   one), with the same buffers, results and errors; libuv then never reads the socket.
 * - Writes go straight to the handle (`writeBuffer`: the write system call at once, libuv's queue
 *   only for what the kernel did not take); the request object is reused until a write stays
 *   pending. A pending write's completion comes through the writer's callback.
 * - end() asks for a shutdown (libuv runs it after the queued writes: our FIN follows our data).
 *   ENOTCONN counts as done, as in net.Socket. When the caller knows nothing is queued, the FIN
 *   goes at once through the addon instead (see end()). A half-open end closes itself once both
 *   its end of stream has been read and its shutdown has completed (net.Socket's autoDestroy).
 * - reset() closes with a RST (SO_LINGER 0). libuv refuses that while a shutdown is in progress
 *   (UV_EINVAL), and node then marks the handle closing without closing it (the descriptor leaks and
 *   no close callback ever comes); so a reset asked for during a shutdown waits for it to complete,
 *   which takes at most one loop turn when nothing is queued before it (the relay passes a FIN on
 *   only once its writes to that side are done); with writes still queued it closes instead.
 * - Errors from reads, writes and connects come as errors with `code`, `errno` and `syscall`, and
 *   the messages net.Socket would give ("read ECONNRESET", "connect ECONNREFUSED 127.0.0.1:80").
 */
import { socketError, type ReadSink, type TcpEnd } from './tcp-end.js';
import { directCalls } from './socket-calls.js';
import { batchedReads } from './tcp-reads.js';
import { nativeBindings, type AddressOut, type Bindings, type ConnectRequest, type NativeTcp, type ShutdownRequest } from './tcp-wrap.js';

let cached: Bindings | null = null;

/** The bindings, looked up once; before the first read of a handle (onRead counts on them). */
export function tcpBindings(): Bindings {
  cached ??= nativeBindings();
  return cached;
}

const UV_EOF = -4095;
const UV_ENOTCONN = -107;

// ---- reading ------------------------------------------------------------------------------------

/** One function for every handle (no closure per connection): the handle's owner does the rest. */
function onRead(this: NativeTcp): Uint8Array | undefined {
  const end = this.owner as NativeTcpEnd | undefined;
  if (end === undefined) return undefined;
  const b = cached!;
  const nread = b.state[b.kReadBytesOrError]!;
  if (nread > 0) return end.readLanded(nread);
  if (nread < 0) end.readFailed(nread);
  return undefined; // 0: nothing to read after all (EAGAIN)
}

function noop(): void {}

// ---- one end ------------------------------------------------------------------------------------

export class NativeTcpEnd implements TcpEnd {
  /** null once closing. */
  handle: NativeTcp | null;
  /** Called once a dial completes. */
  onConnect: () => void = noop;
  /** End of stream (the peer's FIN). */
  onEnd: () => void = noop;
  /** A read, write, shutdown or connect error; the end is not closed by it (the owner decides). */
  onError: (err: NodeJS.ErrnoException) => void = noop;
  /** The handle is closed (once; after close(), reset() or a clean end of both halves). */
  onClose: () => void = noop;

  #sink: ReadSink | null = null;
  #descriptor = -1;
  #userBuffer = false;
  /** Batched reads (tcp-reads.ts): this end's slot once it first reads, and its buffer until then. */
  #readSlot = -1;
  #firstBuffer: Uint8Array | null = null;
  #inRead = false;
  #reading = false;
  /** The peer's FIN was read. */
  readableEnded = false;
  /** Our shutdown was asked for. */
  writableEnded = false;
  /** Our shutdown completed. */
  writableFinished = false;
  /** close() or reset() was called, or the end closed itself. */
  destroyed = false;
  /** The close callback came. */
  closed = false;
  #resetAfterShutdown = false;

  /** An end on a handle net.Server accepted (acceptEnds in native-tcp-path.ts). */
  constructor(handle: NativeTcp) {
    this.handle = handle;
    handle.owner = this;
    handle.onread = onRead;
  }

  /**
   * Dials `address`:`port` (an IP literal of `family`). onConnect follows, or onError with syscall
   * 'connect' (asynchronously, also when the dial fails at once: EMFILE, say).
   */
  static dial(address: string, port: number, family: 4 | 6): NativeTcpEnd {
    const b = tcpBindings();
    const end = new NativeTcpEnd(new b.TCP(b.SOCKET));
    const req = new b.TCPConnectWrap();
    req.end = end;
    req.address = address;
    req.port = port;
    req.oncomplete = afterConnect;
    const handle = end.handle!;
    const err = family === 6 ? handle.connect6(req, address, port) : handle.connect(req, address, port);
    if (err !== 0) {
      const error = socketError(err, 'connect', `${address}:${port}`);
      process.nextTick(() => {
        if (!end.destroyed) end.onError(error);
      });
    }
    return end;
  }

  get fd(): number {
    return this.handle?.fd ?? -1;
  }

  /**
   * The socket's descriptor, read once from the handle (a call into C++ each time otherwise); -1
   * once the handle is closed, as the number may then belong to another socket.
   */
  get descriptor(): number {
    if (this.handle === null) return -1;
    if (this.#descriptor < 0) this.#descriptor = this.handle.fd;
    return this.#descriptor;
  }

  /** Bytes libuv still holds for pending writes; 0 once closed. */
  get pendingWriteBytes(): number {
    return this.handle?.writeQueueSize ?? 0;
  }

  /**
   * Bytes in the kernel's send queue that the peer has not acknowledged (sent or not), -1 when
   * that cannot be known (no addon, or the handle is closed). With pendingWriteBytes, what a reset
   * now would throw away.
   */
  unsentBytes(): number {
    const direct = directCalls();
    const fd = direct === null ? -1 : this.descriptor;
    if (fd < 0) return -1;
    const queued = direct!.unsentBytes(fd);
    return queued < 0 ? -1 : queued;
  }

  /** The peer's address, or null (closed, or the kernel no longer knows: reset). */
  remote(): { address: string; port: number; family: string } | null {
    return addressOf(this.handle, 'getpeername');
  }

  /** Our side's address, or null once closed. */
  local(): { address: string; port: number; family: string } | null {
    return addressOf(this.handle, 'getsockname');
  }

  setNoDelay(): void {
    this.handle?.setNoDelay(true);
  }

  /** TCP keepalive, first probe after `ms` of silence (whole seconds, as net.Socket does). */
  setKeepAlive(ms: number): void {
    this.handle?.setKeepAlive(true, Math.floor(ms / 1000));
  }

  /**
   * Hands reads to `sink`. Inside a read callback (a PROXY header reader handing over to the
   * relay) the switch happens when that read returns; otherwise the sink's first buffer is
   * registered now. Does not start reading.
   */
  setSink(sink: ReadSink): void {
    this.#sink = sink;
    if (this.#inRead || this.handle === null) return;
    const buffer = sink.nextBuffer();
    if (buffer === null) return;
    this.#userBuffer = true;
    const reads = batchedReads();
    if (reads !== null) {
      if (this.#readSlot >= 0) reads.readInto(this.#readSlot, buffer);
      else this.#firstBuffer = buffer;
      return;
    }
    // Each call pushes a new native listener; the relay calls it once per end (the header reader
    // hands over from inside a read, above, and so adds none).
    this.handle.useUserBuffer(buffer);
  }

  /** Starts reading. Returns the error to fail with, or null. */
  startReading(): NodeJS.ErrnoException | null {
    const handle = this.handle;
    if (handle === null || this.#reading || this.readableEnded || !this.#userBuffer) return null;
    this.#reading = true;
    const reads = batchedReads();
    let err: number;
    if (reads === null) {
      err = handle.readStart();
    } else if (this.#readSlot >= 0) {
      err = reads.resume(this.#readSlot, this.descriptor);
    } else {
      err = reads.watch(this, this.descriptor, this.#firstBuffer!);
      if (err >= 0) {
        this.#readSlot = err;
        this.#firstBuffer = null;
        err = 0;
      }
    }
    return err === 0 ? null : socketError(err, 'read');
  }

  stopReading(): void {
    if (!this.#reading) return;
    this.#reading = false;
    this.#pauseReads();
  }

  #pauseReads(): void {
    if (this.#readSlot >= 0) batchedReads()!.pause(this.#readSlot);
    else this.handle?.readStop();
  }

  /**
   * No more batched reads. `closed`: the handle's close has just closed the descriptor (libuv
   * closes it within close() and reset()), which took it out of the epoll set already.
   */
  #forgetReads(closed: boolean): void {
    const slot = this.#readSlot;
    if (slot < 0) return;
    this.#readSlot = -1;
    batchedReads()!.forget(slot, closed);
  }

  get reading(): boolean {
    return this.#reading;
  }

  /** From onRead: `nread` bytes are in the sink's current buffer. */
  readLanded(nread: number): Uint8Array | undefined {
    const sink = this.#sink;
    if (sink === null) return undefined;
    this.#inRead = true;
    const more = sink.onStaticRead(nread);
    this.#inRead = false;
    if (!more) this.stopReading();
    if (this.handle === null) return undefined;
    // The sink may have changed during the read (a header reader handing over).
    const next = this.#sink!.nextBuffer();
    return next === null ? undefined : next;
  }

  /** From onRead: end of stream or a read error. */
  readFailed(status: number): void {
    this.stopReading();
    if (this.destroyed) return;
    if (status !== UV_EOF) {
      this.onError(socketError(status, 'read'));
      return;
    }
    this.readableEnded = true;
    this.onEnd();
    if (this.writableFinished) this.close();
  }

  /**
   * Sends our FIN after the pending writes (idempotent). `nothingQueued`: the caller knows libuv
   * holds no write for this end (its one writer has none pending); then, with the addon, the FIN
   * goes at once (shutdownNow) and the shutdown is done before this returns. Otherwise libuv's
   * shutdown runs after the queue, and completes in a later turn.
   */
  end(nothingQueued = false): void {
    const handle = this.handle;
    if (handle === null || this.writableEnded) return;
    this.writableEnded = true;
    const direct = nothingQueued ? directCalls() : null;
    const fd = direct === null ? -1 : this.descriptor;
    if (fd >= 0) {
      // The peer's FIN was read too: close() sends ours (nothing is left unread, so the kernel
      // sends a FIN, not a reset), one system call instead of two.
      // Otherwise the status is ignored, as libuv's is below (afterShutdown): ENOTCONN, the only
      // error a connected socket can give, means the peer reset it, which the reads report.
      if (!this.readableEnded) direct!.shutdownNow(fd);
      this.shutdownDone();
      return;
    }
    const req = new (tcpBindings().ShutdownWrap)();
    req.handle = handle;
    req.end = this;
    req.oncomplete = afterShutdown;
    const err = handle.shutdown(req);
    if (err === 1 || err === UV_ENOTCONN) {
      this.shutdownDone();
    } else if (err !== 0) {
      this.onError(socketError(err, 'shutdown'));
    }
  }

  /** From the shutdown request (its status is ignored, as net.Socket does). */
  shutdownDone(): void {
    this.writableFinished = true;
    if (this.#resetAfterShutdown) {
      this.#resetAfterShutdown = false;
      this.reset();
    } else if (this.readableEnded) {
      this.close();
    }
  }

  /** Closes (idempotent). Pending writes complete with ECANCELED. */
  close(): void {
    const handle = this.handle;
    if (handle === null) return;
    this.handle = null;
    this.destroyed = true;
    this.#reading = false;
    handle.close(this.#closed);
    this.#forgetReads(true);
  }

  /** Closes with a TCP RST (idempotent); see the header for a reset during a shutdown. */
  reset(): void {
    const handle = this.handle;
    if (handle === null) return;
    this.destroyed = true;
    if (this.writableEnded && !this.writableFinished) {
      if (handle.writeQueueSize > 0) {
        // The shutdown waits behind writes the peer is not taking: it may never complete. (The
        // relay passes a FIN on only once its writes to that side are done, so this is a guard.)
        this.close();
        return;
      }
      this.#resetAfterShutdown = true;
      this.#pauseReads();
      return;
    }
    this.handle = null;
    this.#reading = false;
    const failed = handle.reset(this.#closed) !== 0;
    // Failed: the descriptor is still open (see below), and must leave the epoll set by hand.
    this.#forgetReads(!failed);
    if (failed) {
      // libuv could not set SO_LINGER: node has marked the handle closing without closing it, and
      // no callback will come. Tell the owner all the same, so that the connection is accounted.
      process.nextTick(this.#closed);
    }
  }

  /**
   * Whether an end that just reported end of stream was in fact reset. libuv turns a reset that
   * arrives right after data into an end of stream (uv__stream_io: POLLHUP after a partial read)
   * and never reads the error. The kernel tells them apart: a FIN leaves the connection half-open
   * (CLOSE_WAIT), while a reset closes it, and getpeername() then fails with ENOTCONN. Only
   * meaningful while our own write half is open: after our FIN, a normal close also ends in CLOSE.
   */
  wasReset(): boolean {
    if (this.writableEnded || this.handle === null) return false;
    const direct = directCalls();
    if (direct !== null) return direct.peerConnected(this.descriptor) !== 1;
    return this.handle.getpeername({}) !== 0;
  }

  readonly #closed = (): void => {
    if (this.closed) return;
    this.closed = true;
    this.destroyed = true;
    this.handle = null;
    const onClose = this.onClose;
    // Nothing can come from a closed end: forget the owner, so that whatever still holds the end
    // for a moment (keepalive-later.ts) does not hold the whole connection.
    this.onConnect = this.onEnd = this.onClose = noop;
    this.onError = noop;
    this.#sink = null;
    this.#firstBuffer = null;
    onClose();
  };
}

function afterConnect(this: ConnectRequest, status: number): void {
  const end = this.end as NativeTcpEnd;
  if (end.destroyed) return;
  if (status !== 0) end.onError(socketError(status, 'connect', `${this.address}:${this.port}`));
  else end.onConnect();
}

function afterShutdown(this: ShutdownRequest): void {
  (this.end as NativeTcpEnd).shutdownDone();
}

function addressOf(handle: NativeTcp | null, which: 'getpeername' | 'getsockname'): { address: string; port: number; family: string } | null {
  if (handle === null) return null;
  const out: AddressOut = {};
  if (handle[which](out) !== 0 || out.address === undefined) return null;
  return { address: out.address, port: out.port ?? 0, family: out.family ?? '' };
}
