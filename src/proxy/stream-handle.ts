/**
 * The few Node internals the TCP relay leans on, kept in one file so a Node upgrade has one place to
 * check. Everything here is feature-detected: when a piece is missing the caller falls back to the
 * public stream API (slower, same behaviour).
 *
 * Why internals at all: the fast relay reads into one static buffer per direction (`onread:
 * { buffer, callback }`) and stops reading until that buffer's write has been handed to the kernel.
 * Node offers `onread` only to sockets it creates from `net.connect()`; a socket accepted by
 * net.Server (Node 20) cannot get it. The accepted socket is the same class with the same handle
 * type, and `onread` is nothing but two per-socket slots (kBuffer, kBufferCb) plus
 * `handle.useUserBuffer()`; filling them after the fact puts the accepted socket on exactly the code
 * path `onread` uses (lib/internal/stream_base_commons.js onStreamRead). Measured on loopback with
 * one core: about 10 Gbit/s client→target this way, against 3–4 Gbit/s with 'data' events or pipe().
 *
 * The buffer may change between reads: like `onread.buffer` given as a function, a generator in the
 * socket's kBufferGen slot is asked after each read for the buffer to read into next (null: keep
 * the current one), which Node hands to the native side without re-registering anything. The relay
 * uses it to read into a small buffer until a read fills it (relay-flow.ts).
 *
 * Pausing and resuming go to the handle (readStop/readStart, as net.Socket's own tryReadStart
 * does) rather than through socket.pause()/resume(): the Readable state machine would otherwise
 * call read() later and restart reading while our buffer is still lent to a pending write.
 */
import { Socket } from 'node:net';
import { getSystemErrorName } from 'node:util';

/** The parts of Node's TCPWrap (a LibuvStreamWrap) that we use. */
interface NativeStreamHandle {
  /** 0 or a negative errno; streamBaseState tells whether the write is still pending. */
  writeBuffer?(req: WriteRequest, buffer: Uint8Array): number;
  /** 0, or a negative errno (UV_ENOTCONN once the kernel has closed the connection). */
  getpeername?(out: Record<string, unknown>): number;
  reading: boolean;
  readStart(): number;
  readStop(): number;
  useUserBuffer(buffer: Uint8Array): void;
  /** Bytes libuv still has to write; shrinks as the kernel accepts a pending write piecewise. */
  readonly writeQueueSize: number;
}

function handleOf(socket: Socket): NativeStreamHandle | null {
  // `_handle` is net.Socket's (undocumented, long-stable) native handle; null once destroyed.
  return (socket as unknown as { _handle: NativeStreamHandle | null })._handle ?? null;
}

type SymbolSlots = Record<symbol, unknown>;

interface OnreadSlots {
  readonly buffer: symbol;
  readonly callback: symbol;
  readonly generator: symbol;
}

/** After each read: the buffer to read into next, or null to keep the current one. */
export type NextBuffer = () => Uint8Array | null;

let onreadSlots: OnreadSlots | null | undefined;

/** Finds net.Socket's private kBuffer/kBufferCb/kBufferGen slots by their descriptions, once. */
function findOnreadSlots(): OnreadSlots | null {
  if (onreadSlots !== undefined) return onreadSlots;
  const probe = new Socket(); // no handle, no fd: nothing to close
  const byName = new Map<string, symbol>();
  for (const sym of Object.getOwnPropertySymbols(probe)) {
    if (sym.description !== undefined) byName.set(sym.description, sym);
  }
  const buffer = byName.get('kBuffer');
  const callback = byName.get('kBufferCb');
  const generator = byName.get('kBufferGen');
  const slots = probe as unknown as SymbolSlots;
  onreadSlots =
    buffer !== undefined && callback !== undefined && generator !== undefined &&
    slots[buffer] === null && slots[callback] === null && slots[generator] === null
      ? { buffer, callback, generator }
      : null;
  return onreadSlots;
}

/**
 * Puts an already connected socket (typically one accepted by net.Server) on the static-buffer read
 * path, as if it had been created with `onread: { buffer: next, callback }`, and leaves it not
 * reading. `next()` is asked for the first buffer now and after every read for a change. Returns
 * the data Node had already read into the stream before the take-over (to be forwarded first), or
 * null when the take-over is not possible: then use 'data' events.
 */
export function adoptStaticBuffer(
  socket: Socket,
  next: NextBuffer,
  callback: (nread: number, buf: Uint8Array) => boolean,
): Buffer[] | null {
  const slots = findOnreadSlots();
  const handle = handleOf(socket);
  if (slots === null || handle === null || typeof handle.useUserBuffer !== 'function') return null;
  const own = socket as unknown as SymbolSlots;
  if (own[slots.buffer] !== null) return null; // already on the onread path: not ours to change
  const buffer = next();
  if (buffer === null) return null;
  // Data read before we took over sits in the Readable buffer (at most its high-water mark).
  const early: Buffer[] = [];
  for (let chunk: unknown; (chunk = socket.read()) !== null; ) {
    if (Buffer.isBuffer(chunk)) early.push(chunk);
  }
  own[slots.buffer] = buffer;
  own[slots.callback] = callback;
  own[slots.generator] = next;
  handle.useUserBuffer(buffer);
  stopReading(socket);
  return early;
}

/** Stops reading from the socket's handle (no-op when already stopped or closed). */
export function stopReading(socket: Socket): void {
  const handle = handleOf(socket);
  if (handle === null || !handle.reading) return;
  handle.reading = false;
  handle.readStop();
}

/**
 * Starts reading on a static-buffer socket. Returns an error to destroy the socket with, or null.
 * Mirrors net.js tryReadStart().
 */
export function startReading(socket: Socket): Error | null {
  const handle = handleOf(socket);
  if (handle === null || handle.reading) return null;
  handle.reading = true;
  const err = handle.readStart();
  if (err === 0) return null;
  const code = getSystemErrorName(err);
  return Object.assign(new Error(`read ${code}`), { code, errno: err, syscall: 'read' });
}

/**
 * Bytes libuv still holds for the socket's pending writes, or -1 when unknown. A change between two
 * observations means the peer is taking data, even if no write has completed yet (the same signal
 * net.Socket's own setTimeout() uses to spare a socket that is slowly writing).
 */
export function pendingWriteBytes(socket: Socket): number {
  const handle = handleOf(socket);
  const size = handle === null ? undefined : handle.writeQueueSize;
  return typeof size === 'number' ? size : -1;
}

/**
 * Ends a socket with a TCP RST (socket.resetAndDestroy()), also when its write side is being shut
 * down. libuv refuses to reset a stream whose shutdown request is pending (uv_tcp_close_reset:
 * UV_EINVAL), and Node 20 then emits an 'error' and drops the handle without closing it: no
 * 'close' event ever comes and the descriptor leaks. The relay meets that window whenever one
 * side's FIN has just been passed on (end(), then shutdown until the next poll) and the other
 * direction is cut in the same loop turn — a bandwidth drop, a timeout, a reset from the peer.
 * Then the reset waits for the shutdown to complete ('finish'), which takes at most one turn, as
 * the write queue is already empty when Node asks for the shutdown; a socket destroyed meanwhile
 * needs nothing more.
 */
export function resetSocket(socket: Socket): void {
  if (socket.destroyed) return;
  if (socket.writableEnded && !socket.writableFinished && socket.writableLength === 0) {
    socket.once('finish', () => resetSocket(socket));
    return;
  }
  try {
    socket.resetAndDestroy();
  } catch {
    // Not a TCP handle (cannot happen for the relay's sockets): a plain close will do.
    socket.destroy();
  }
}

/**
 * Whether a socket that just reported end of stream was in fact reset. libuv turns a reset that
 * arrives right after data into an end of stream (uv__stream_io: POLLHUP after a partial read) and
 * never reads the error. The kernel tells them apart: a FIN leaves the connection half-open
 * (CLOSE_WAIT), while a reset closes it, and getpeername() then fails with ENOTCONN. Only
 * meaningful while our own write half is open: after our FIN, a normal close also ends in CLOSE.
 */
export function wasReset(socket: Socket): boolean {
  if (socket.writableEnded) return false;
  const handle = handleOf(socket);
  if (handle === null || typeof handle.getpeername !== 'function') return false;
  return handle.getpeername({}) !== 0;
}

// ---- writes straight to the handle ------------------------------------------------------------

/** Node's WriteWrap as the JS side sees it. */
interface WriteRequest {
  handle?: unknown;
  /** Called by the native side, for a write that was pending, with its status (0 or a negative errno). */
  oncomplete?: (status: number) => void;
  /** Keeps the written buffer alive while the write is pending (as Node does). */
  buffer?: Uint8Array | null;
}

interface StreamWrapBinding {
  readonly WriteWrap: new () => WriteRequest;
  readonly streamBaseState: Int32Array;
  readonly kLastWriteWasAsync: number;
}

let streamWrap: StreamWrapBinding | null | undefined;

function findStreamWrap(): StreamWrapBinding | null {
  if (streamWrap !== undefined) return streamWrap;
  streamWrap = null;
  try {
    // process.binding is deprecated (documentation only in Node 20) but still serves the
    // allow-listed 'stream_wrap', the very binding net.Socket writes through.
    const b = (process as unknown as { binding?: (name: string) => Partial<StreamWrapBinding> }).binding?.('stream_wrap');
    if (typeof b?.WriteWrap === 'function' && b.streamBaseState instanceof Int32Array && typeof b.kLastWriteWasAsync === 'number') {
      streamWrap = b as StreamWrapBinding;
    }
  } catch {
    // not available: HandleWriter.create() answers null
  }
  return streamWrap;
}

/** HandleWriter.write(): the kernel (or libuv's queue, behind earlier writes) took it all. */
export const WRITE_DONE = 0;
/** HandleWriter.write(): the write waits for the peer; `onComplete` follows. */
export const WRITE_PENDING = 1;

/**
 * Writes one relay direction's chunks straight to a socket's handle — what net.Socket#write ends up
 * doing (`handle.writeBuffer`, which tries the write system call at once and queues in libuv only
 * what the kernel did not take), without the Writable machinery around it: its state updates, its
 * write request per chunk and the process.nextTick that reports even an immediate write. Profiled
 * under HTTP keep-alive load, that machinery was most of the relay's own JS time per chunk.
 *
 * The write request is reused until a write stays pending (then it belongs to that write). Order
 * is kept with writes made through the socket itself (a PROXY header): libuv queues a write behind
 * any pending one, and end() asks for a shutdown that libuv runs after the queue drains. What is
 * pending shows in pendingWriteBytes(), not in socket.writableLength.
 */
export class HandleWriter {
  readonly #binding: StreamWrapBinding;
  readonly #onComplete: (status: number) => void;
  #req: WriteRequest;

  private constructor(binding: StreamWrapBinding, onComplete: (status: number) => void) {
    this.#binding = binding;
    this.#onComplete = onComplete;
    this.#req = this.#request();
  }

  /** A writer, or null when Node's internals are not as expected (then use socket.write()). */
  static create(onComplete: (status: number) => void): HandleWriter | null {
    const binding = findStreamWrap();
    return binding === null ? null : new HandleWriter(binding, onComplete);
  }

  #request(): WriteRequest {
    const req = new this.#binding.WriteWrap();
    req.oncomplete = this.#onComplete;
    req.buffer = null;
    return req;
  }

  /**
   * WRITE_DONE, WRITE_PENDING (onComplete(status) follows), or a negative errno (nothing written;
   * writeError() makes the error net.Socket would have raised).
   */
  write(socket: Socket, buffer: Uint8Array): number {
    const handle = handleOf(socket);
    if (handle === null || typeof handle.writeBuffer !== 'function') return UV_EBADF;
    const req = this.#req;
    req.handle = handle;
    const err = handle.writeBuffer(req, buffer);
    if (err !== 0) return err < 0 ? err : UV_EBADF;
    const binding = this.#binding;
    if (binding.streamBaseState[binding.kLastWriteWasAsync] === 0) return WRITE_DONE;
    req.buffer = buffer;
    this.#req = this.#request();
    return WRITE_PENDING;
  }
}

const UV_EBADF = -9;

/** The error net.Socket raises for a failed write (syscall 'write', so it is counted as a write error). */
export function writeError(status: number): NodeJS.ErrnoException {
  let code = 'EIO';
  try {
    code = getSystemErrorName(status);
  } catch {
    // not an errno: keep EIO
  }
  return Object.assign(new Error(`write ${code}`), { code, errno: status, syscall: 'write' });
}
