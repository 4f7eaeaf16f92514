/**
 * The writer of one relay direction to an end on a native handle (native-tcp-end.ts): the
 * EndWriter of tcp-end.ts, on Node's writeBuffer and, with the addon, a send straight to the
 * socket (socket-calls.ts).
 */
import { WRITE_DONE, WRITE_PENDING, type EndWriter, type TcpEnd } from './tcp-end.js';
import type { NativeTcpEnd } from './native-tcp-end.js';
import { directCalls } from './socket-calls.js';
import { nativeBindings, type Bindings, type WriteRequest } from './tcp-wrap.js';

let cached: Bindings | null = null;

function bindings(): Bindings {
  cached ??= nativeBindings();
  return cached;
}

const UV_EBADF = -9;

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
