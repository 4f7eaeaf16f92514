/**
 * AF_UNIX datagram sockets (unix_dgram.c in our addon): Node has none. Used for the local syslog
 * socket (src/telemetry/sinks/syslog-unix.ts) and systemd's notify socket
 * (src/supervisor/sd-notify.ts), and by the tests as receivers.
 *
 * Nothing here loads the addon until a socket is asked for, so a daemon that uses neither never
 * touches it; when it is not there, nativeUnixDatagrams.missing() says why and the callers decide what
 * that means (a sink that cannot start, a notification not sent). A path starting with '@' is a
 * Linux abstract socket name. Errors are errno names ('ECONNREFUSED', 'EAGAIN'), returned, not
 * thrown: each caller has its own way to go on.
 */
import { constants } from 'node:os';
import { nativeAddon, nativeAddonMissing } from './addon.js';

/** What unix_dgram.c exports (see there). */
export interface UnixDatagramCalls {
  unixOpen(): number;
  unixConnect(fd: number, path: string): number;
  unixBind(fd: number, path: string): number;
  unixSend(fd: number, buffer: Uint8Array, path?: string | null): number;
  unixReceive(fd: number, buffer: Uint8Array): number;
  unixClose(fd: number): number;
  unixPoll(fd: number, callback: (events: number, status: number) => void): object;
  unixPollEvents(watch: object, events: number): number;
  unixPollClose(watch: object): void;
}

const READABLE = 1;
const WRITABLE = 2;

/** Where the socket calls come from: the addon, or a stand-in (tests of a missing addon). */
export interface UnixDatagramSource {
  /** The calls, or null when they are not there. Loads the addon on first use. */
  calls(): UnixDatagramCalls | null;
  /** Why calls() answers null. */
  missing(): string;
}

export const nativeUnixDatagrams: UnixDatagramSource = {
  calls: () => nativeAddon(),
  missing: () => nativeAddonMissing(),
};

/** 'ECONNREFUSED' for -111: the name a log line or a test can match. */
export function errnoName(result: number): string {
  const found = Object.entries(constants.errno).find(([, value]) => value === -result);
  return found ? found[0] : `errno ${-result}`;
}

/** A datagram socket; the errno name of a failure, or null, from each call. */
export class UnixDatagramSocket {
  readonly #calls: UnixDatagramCalls;
  #fd: number;
  #watch: object | null = null;
  #onReadable: (() => void) | null = null;
  #onWritable: (() => void) | null = null;

  /** Throws when the socket cannot be made: an Error with the errno name as its code. */
  constructor(calls: UnixDatagramCalls) {
    this.#calls = calls;
    const fd = calls.unixOpen();
    if (fd < 0) throw Object.assign(new Error(`cannot create a unix datagram socket: ${errnoName(fd)}`), { code: errnoName(fd) });
    this.#fd = fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Sends go to `path` from now on; the kernel then tells when its reader is gone or full. */
  connect(path: string): string | null {
    return this.#result(this.#fd < 0 ? -constants.errno.EBADF : this.#calls.unixConnect(this.#fd, path));
  }

  bind(path: string): string | null {
    return this.#result(this.#fd < 0 ? -constants.errno.EBADF : this.#calls.unixBind(this.#fd, path));
  }

  /** The datagram, whole; 'EAGAIN' when the reader's queue is full (see onWritable). */
  send(datagram: Uint8Array, path?: string): string | null {
    return this.#result(this.#fd < 0 ? -constants.errno.EBADF : this.#calls.unixSend(this.#fd, datagram, path ?? null));
  }

  /**
   * The next datagram's length (its bytes at the start of `buffer`, cut at buffer's length when
   * longer), null when none is waiting, or an errno name.
   */
  receive(buffer: Uint8Array): number | null | string {
    const n = this.#fd < 0 ? -constants.errno.EBADF : this.#calls.unixReceive(this.#fd, buffer);
    if (n >= 0) return n;
    return n === -constants.errno.EAGAIN ? null : errnoName(n);
  }

  /** `listener` runs whenever a datagram is waiting (null: no more). */
  onReadable(listener: (() => void) | null): void {
    this.#onReadable = listener;
    this.#rewatch();
  }

  /** `listener` runs whenever a send would not get EAGAIN (null: no more). Level-triggered. */
  onWritable(listener: (() => void) | null): void {
    this.#onWritable = listener;
    this.#rewatch();
  }

  close(): void {
    if (this.#fd < 0) return;
    // The watch goes first: libuv must never poll a descriptor number that is free again.
    if (this.#watch !== null) this.#calls.unixPollClose(this.#watch);
    this.#watch = null;
    this.#calls.unixClose(this.#fd);
    this.#fd = -1;
  }

  #result(n: number): string | null {
    return n >= 0 ? null : errnoName(n);
  }

  #rewatch(): void {
    if (this.#fd < 0) return;
    const events = (this.#onReadable ? READABLE : 0) | (this.#onWritable ? WRITABLE : 0);
    if (this.#watch === null) {
      if (events === 0) return;
      this.#watch = this.#calls.unixPoll(this.#fd, (ready, status) => {
        // libuv stops a watch that failed: each listener then tries, and meets the error itself.
        const all = status < 0 ? READABLE | WRITABLE : ready;
        // Either listener may close the socket or drop the other listener.
        if (all & READABLE) this.#onReadable?.();
        if (all & WRITABLE && this.#fd >= 0) this.#onWritable?.();
      });
    }
    this.#calls.unixPollEvents(this.#watch, events);
  }
}
