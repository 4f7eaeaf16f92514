/**
 * Syslog on a local datagram socket (`/dev/log`, or any path; '@name' for an abstract socket),
 * through our native addon's unix datagram sockets (src/native/unix-dgram.ts): Node itself has
 * none. The addon is looked for only when such a sink is configured, and its absence is this
 * sink's error, said with the reason — never the daemon's crash.
 *
 * The socket is connected, so the kernel tells us when the reader's queue is full (EAGAIN): the
 * message is held and sent again once the socket is writable, and the sink's in-flight limit and
 * stall watchdog bound how long that may go on. A reader that went away (syslog daemon restarted:
 * ECONNREFUSED, ENOENT) fails the transport; the sink connects again with backoff.
 */
import { LogSinkError } from '../../errors.js';
import { UnixDatagramSocket, nativeUnixDatagrams, type UnixDatagramCalls, type UnixDatagramSource } from '../../native/unix-dgram.js';
import { localDatagram } from './syslog-message.js';
import type { SyslogConnect, SyslogItem, SyslogTransport } from './syslog-sink.js';

class UnixTransport implements SyslogTransport {
  readonly #socket: UnixDatagramSocket;
  readonly #path: string;
  readonly #tag: string;
  /** Messages refused with EAGAIN, sent again in order once the socket is writable. */
  #held: Array<{ datagram: Buffer; done: (error: Error | null) => void }> = [];
  #closed = false;

  constructor(calls: UnixDatagramCalls, path: string, tag: string) {
    this.#path = path;
    this.#tag = tag;
    this.#socket = new UnixDatagramSocket(calls);
    const error = this.#socket.connect(path);
    if (error !== null) {
      this.#socket.close();
      throw new Error(`cannot connect to ${path}: ${error}`);
    }
  }

  send(item: SyslogItem, done: (error: Error | null) => void): void {
    const datagram = localDatagram(this.#tag, process.pid, item.event, item.severity);
    if (this.#held.length > 0) this.#held.push({ datagram, done });
    else this.#send(datagram, done);
  }

  /** Sends one; false when it was held (EAGAIN), to be sent again once writable. */
  #send(datagram: Buffer, done: (error: Error | null) => void): boolean {
    const error = this.#socket.send(datagram);
    if (error === null) {
      done(null);
      return true;
    }
    if (error === 'EAGAIN') {
      this.#held.unshift({ datagram, done });
      this.#socket.onWritable(() => this.#resend());
      return false;
    }
    done(new Error(`cannot send to ${this.#path}: ${error}`));
    return true;
  }

  #resend(): void {
    // Level-triggered: stop watching first, #send watches again should the queue fill up anew.
    this.#socket.onWritable(null);
    while (this.#held.length > 0 && !this.#closed) {
      const next = this.#held.shift()!;
      if (!this.#send(next.datagram, next.done)) return;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#held = [];
    this.#socket.close();
  }
}

export interface UnixSyslogOptions {
  readonly path: string;
  readonly tag: string;
  /** Where the socket calls come from: the native addon unless a test stands in for it. */
  readonly source?: UnixDatagramSource;
}

/**
 * The transport factory for a unix syslog sink. Throws LogSinkError when the native addon, which
 * holds the socket calls, is not there: the configuration asks for something this build cannot do.
 */
export function unixSyslog(options: UnixSyslogOptions): SyslogConnect {
  const source = options.source ?? nativeUnixDatagrams;
  const calls = source.calls();
  if (calls === null) {
    throw new LogSinkError(
      `logging.syslog: cannot use the unix socket ${options.path}: the native addon is not built (${source.missing()}); ` +
        'build it with npm run build (it needs a C compiler), or log to syslog over udp or tcp',
    );
  }
  return () => new UnixTransport(calls, options.path, options.tag);
}
