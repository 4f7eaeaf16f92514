/**
 * One end of a relayed TCP connection, on Node's native TCP handle (tcp_wrap) with no net.Socket
 * around it: the fast implementation of the relay's TcpEnd (tcp-end.ts), taken where the
 * tcp_wrap probe says yes (tcp-wrap.ts); elsewhere src/proxy/socket-end.ts does the same over
 * net.Socket. test/unit/proxy/tcp-handle.test.ts fails first if the internals move.
 *
 * Why not net.Socket: a relayed connection is two sockets, and each net.Socket is a full Duplex
 * stream (two state objects, an EventEmitter, its own connect and teardown machinery, events
 * emitted through process.nextTick). For a short connection that machinery was most of the child's
 * CPU: measured with wrk opening a connection per request (one core, loopback), a relay on the raw
 * handles took 120 µs of CPU per connection where net + pipe() took 235. The relay needs far
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
import net from 'node:net';
import { socketError, WRITE_DONE, WRITE_PENDING, type EndWriter, type ReadSink, type TcpEnd, type TcpEnds } from './tcp-end.js';
import { batchedReads, tcpAddon } from './tcp-reads.js';
import {
  nativeBindings, serverHandle, type AddressOut, type Bindings, type ConnectRequest, type NativeTcp, type ShutdownRequest, type WriteRequest,
} from './tcp-wrap.js';

let cached: Bindings | null = null;

function bindings(): Bindings {
  cached ??= nativeBindings();
  return cached;
}

const UV_EOF = -4095;
const UV_ENOTCONN = -107;
const UV_EBADF = -9;

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

  /** An end on a handle net.Server accepted (acceptEnds). */
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
    const b = bindings();
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
    const req = new (bindings().ShutdownWrap)();
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

// ---- accepting ----------------------------------------------------------------------------------

/**
 * Takes over a listening net.Server's accepts: each connection arrives as a TcpEnd (not reading
 * yet), never as a net.Socket, and a failed accept (EMFILE…) as an error with syscall 'accept'.
 * Call once the server is listening. The server's own 'connection' event, maxConnections and
 * connection count no longer apply; close() still stops the listening.
 */
export function acceptEnds(
  server: net.Server,
  onConnection: (end: TcpEnd) => void,
  onError: (err: NodeJS.ErrnoException) => void,
): void {
  bindings();
  const handle = serverHandle(server);
  if (handle === null) throw new Error('acceptEnds: the server is not listening');
  handle.onconnection = (err, client) => {
    if (err !== 0 || client === undefined) {
      onError(socketError(err === 0 ? UV_EBADF : err, 'accept'));
      return;
    }
    onConnection(new NativeTcpEnd(client));
  };
}

/**
 * Sets TCP_NODELAY and keepalive (first probe after `keepAliveMs`) on a listening server's socket,
 * so that the connections it accepts start with them: Linux copies a listening socket's options
 * to each connection it accepts, which saves five system calls per connection (measured: the
 * per-connection setsockopt calls were a tenth of a child's CPU under a connection per request).
 * Returns whether that applies (Linux, and both calls succeeded); otherwise set them per
 * connection. The listening socket is shared by every child of the listener, which all want the same.
 */
export function presetAcceptedOptions(server: net.Server, keepAliveMs: number): boolean {
  if (process.platform !== 'linux') return false;
  const handle = serverHandle(server);
  if (handle === null || typeof handle.setNoDelay !== 'function' || typeof handle.setKeepAlive !== 'function') return false;
  if (handle.setNoDelay(true) !== 0) return false;
  return keepAliveMs <= 0 || handle.setKeepAlive(true, Math.floor(keepAliveMs / 1000)) === 0;
}

// ---- writing ------------------------------------------------------------------------------------

export { WRITE_DONE, WRITE_PENDING } from './tcp-end.js';

type SendNow = (fd: number, buffer: Uint8Array, length: number) => number;

/** The addon's calls straight to a socket's descriptor (src/native/socket_calls.c). */
interface DirectCalls {
  /** One send(2) of a chunk, with no write request, no view and no stream checks around it. */
  readonly sendNow: SendNow;
  /** shutdown(2) of the write half, with no request object and no callback. */
  readonly shutdownNow: (fd: number) => number;
  /** 1 while getpeername(2) succeeds, 0 once the peer is gone (ENOTCONN), or -errno. */
  readonly peerConnected: (fd: number) => number;
  /** The send queue's unacknowledged bytes (SIOCOUTQ), or -errno. */
  readonly unsentBytes: (fd: number) => number;
}

let directLoaded = false;
let direct: DirectCalls | null = null;

/**
 * The addon's direct socket calls, or null without the addon (not Linux, no compiler at install)
 * or with PACKETPONY_TCP_SEND_NOW=0 in the environment: then every chunk goes through Node's
 * writeBuffer (the same system call for ~750 more instructions), every FIN through libuv's
 * shutdown (the same system call a loop turn later, for a request object and a callback into
 * JavaScript), and the reset check through Node's getpeername (which builds the address too).
 */
function directCalls(): DirectCalls | null {
  if (!directLoaded) {
    directLoaded = true;
    const addon = tcpAddon();
    // Unbound on purpose: the native functions use no `this`, and a bound one costs a trampoline
    // per call.
    direct = addon === null ? null : { sendNow: addon.sendNow, shutdownNow: addon.shutdownNow, peerConnected: addon.peerConnected, unsentBytes: addon.unsentBytes };
  }
  return direct;
}

/** Whether chunks and FINs go straight to the socket (false: through Node's writeBuffer and libuv's shutdown). */
export function sendsNow(): boolean {
  return directCalls() !== null;
}

/**
 * Writes one relay direction's chunks to an end's handle. A write request is made for the first
 * write through writeBuffer and reused until a write stays pending (then it belongs to that
 * write); order with a PROXY header written before is kept by libuv's queue, and end() asks for a
 * shutdown that libuv runs after the queue drains.
 *
 * With the addon, a chunk is first sent straight to the socket's descriptor, but only while
 * libuv's queue for it is empty (so nothing can overtake data already queued); whatever the
 * kernel did not take then goes through writeBuffer as usual, and the write is pending from there.
 * The descriptor is only used while the end's handle is open: close() and reset() drop the handle
 * before libuv closes the descriptor, whose number the kernel may then give to another socket.
 */
export class HandleWriter implements EndWriter {
  readonly #onComplete: (status: number) => void;
  readonly #sendNow = directCalls()?.sendNow ?? null;
  /**
   * The request for the next write through writeBuffer; made when first needed: with the addon,
   * most connections never write through libuv at all, and each request is a native object
   * (a WriteWrap: an async id, a weak handle, a destructor run by the garbage collector).
   */
  #req: WriteRequest | null = null;
  /**
   * This writer's writes libuv still holds. The relay writes to an end through its one writer
   * only, so when this is 0 libuv's queue for the end is empty (cheaper to know here than to ask
   * the handle's writeQueueSize, a call into C++).
   */
  #pending = 0;

  constructor(onComplete: (status: number) => void) {
    this.#onComplete = onComplete;
  }

  /** No write of this writer's is waiting in libuv's queue. */
  get idle(): boolean {
    return this.#pending === 0;
  }

  #request(): WriteRequest {
    const req = new (bindings().WriteWrap)();
    req.oncomplete = this.#completed;
    req.buffer = null;
    return req;
  }

  readonly #completed = (status: number): void => {
    this.#pending--;
    this.#onComplete(status);
  };

  /**
   * Writes buffer[0, length). WRITE_DONE, WRITE_PENDING (onComplete(status) follows), or a negative
   * errno (socketError(status, 'write') makes the error).
   */
  write(end: TcpEnd, buffer: Uint8Array, length = buffer.length): number {
    const handle = (end as NativeTcpEnd).handle;
    if (handle === null) return UV_EBADF;
    let chunk = buffer;
    let from = 0;
    const direct = this.#sendNow;
    if (direct !== null && this.#pending === 0) {
      const fd = end.descriptor;
      if (fd >= 0) {
        from = direct(fd, buffer, length);
        if (from === length) return WRITE_DONE;
        if (from < 0) return from;
      }
    }
    if (from > 0 || length !== buffer.length) chunk = buffer.subarray(from, length);
    const req = (this.#req ??= this.#request());
    req.handle = handle;
    const err = handle.writeBuffer(req, chunk);
    if (err !== 0) return err < 0 ? err : UV_EBADF;
    const b = cached!;
    if (b.state[b.kLastWriteWasAsync] === 0) return WRITE_DONE;
    req.buffer = chunk;
    this.#req = null;
    this.#pending++;
    return WRITE_PENDING;
  }
}

/** The relay's ends on native handles (see src/proxy/tcp-end.ts). */
export const nativeTcpEnds: TcpEnds = {
  description: "node's native TCP handles",
  dial: (address, port, family) => NativeTcpEnd.dial(address, port, family),
  writer: (onComplete) => new HandleWriter(onComplete),
  // The options matter only to net.Server's own accepts, which acceptEnds replaces.
  createServer: () => net.createServer({ allowHalfOpen: true, pauseOnConnect: true }),
  accept: acceptEnds,
  presetAcceptedOptions,
  prepare: () => {
    batchedReads();
  },
};
