/**
 * Syslog on a local datagram socket (`/dev/log`, or any path), through the `unix-dgram` native
 * package: node itself has no unix datagram sockets.
 *
 * The socket is connected, so the kernel tells us when the reader's queue is full (EAGAIN: the
 * package calls it "congestion" and announces "writable" later): the message is held and sent again
 * then, and the sink's in-flight limit and stall watchdog bound how long that may go on. A reader
 * that went away (syslog daemon restarted: ECONNREFUSED, ENOENT) fails the transport; the sink
 * connects again with backoff.
 */
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import { localDatagram } from './syslog-message.js';
import type { SyslogConnect, SyslogItem, SyslogTransport } from './syslog-sink.js';

/** The part of unix-dgram 2.0.7 used here (the package ships no types). */
interface UnixDgramSocket {
  connect(path: string): void;
  send(buffer: Buffer, done: (error?: Error & { code?: number | string }) => void): void;
  close(): void;
  on(event: 'error', listener: (error: Error & { code?: number | string }) => void): void;
  on(event: 'writable' | 'connect', listener: () => void): void;
}

interface UnixDgramModule {
  createSocket(type: 'unix_dgram'): UnixDgramSocket;
}

const unixDgram = createRequire(import.meta.url)('unix-dgram') as UnixDgramModule;

/** unix-dgram reports `-errno` numbers; messages read better with the name (ECONNREFUSED). */
function errnoName(code: number | string | undefined): string {
  if (typeof code !== 'number') return String(code ?? 'error');
  const found = Object.entries(constants.errno).find(([, value]) => value === -code);
  return found ? found[0] : `errno ${-code}`;
}

function failure(path: string, what: string, error: Error & { code?: number | string }): Error {
  return new Error(`${what} ${path}: ${errnoName(error.code)}`);
}

class UnixTransport implements SyslogTransport {
  readonly #socket: UnixDgramSocket;
  readonly #path: string;
  readonly #tag: string;
  /** Messages refused with EAGAIN, sent again in order on 'writable'. */
  #held: Array<{ datagram: Buffer; done: (error: Error | null) => void }> = [];
  #connected = false;
  #closed = false;

  constructor(path: string, tag: string, broken: (error: Error) => void) {
    this.#path = path;
    this.#tag = tag;
    const socket = unixDgram.createSocket('unix_dgram');
    let connectError: Error | undefined;
    // The package emits synchronously: during connect() an error lands here before it returns.
    socket.on('error', (error) => {
      const wrapped = failure(path, 'socket error on', error);
      if (connectError === undefined && !this.#connected) connectError = failure(path, 'cannot connect to', error);
      else if (!this.#closed) broken(wrapped);
    });
    socket.on('writable', () => this.#resend());
    socket.connect(path);
    this.#socket = socket;
    if (connectError) {
      this.close();
      throw connectError;
    }
    this.#connected = true;
  }

  send(item: SyslogItem, done: (error: Error | null) => void): void {
    const datagram = localDatagram(this.#tag, process.pid, item.event, item.severity);
    if (this.#held.length > 0) this.#held.push({ datagram, done });
    else this.#send(datagram, done);
  }

  #send(datagram: Buffer, done: (error: Error | null) => void): boolean {
    let sent = true;
    this.#socket.send(datagram, (error) => {
      if (!error) done(null);
      else if (error.code === 1) {
        // "congestion": not sent; the package watches for 'writable'.
        sent = false;
        this.#held.unshift({ datagram, done });
      } else done(failure(this.#path, 'cannot send to', error));
    });
    return sent;
  }

  #resend(): void {
    while (this.#held.length > 0 && !this.#closed) {
      const next = this.#held.shift()!;
      if (!this.#send(next.datagram, next.done)) return;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#held = [];
    try {
      this.#socket.close();
    } catch {
      // Already closed.
    }
  }
}

export interface UnixSyslogOptions {
  readonly path: string;
  readonly tag: string;
}

export function unixSyslog(options: UnixSyslogOptions): SyslogConnect {
  return (broken) => new UnixTransport(options.path, options.tag, broken);
}
