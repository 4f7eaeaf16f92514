/**
 * Standard output, text or JSON lines. Under systemd, journald captures it.
 *
 * Node writes to a pipe asynchronously and keeps what the reader has not taken yet in the stream's
 * own buffer; that buffer is this sink's queue. It is bounded here: when journald (or whoever reads)
 * stops reading, events beyond STDOUT_BUFFER_LIMIT bytes are dropped and counted instead of piling
 * up in the supervisor's memory.
 *
 * Lines written in the same tick (a child's batch of events) leave in one system call: they are
 * gathered in one string and written on the next tick. Profiled at a few thousand new connections
 * per second, one write per line took 8 % of the proxy's core; a corked stream (one writev, but a
 * chunk, with its state and encoding, per line) still cost the supervisor 53.5 k instructions per
 * connection (two lines) under callgrind, one string per tick 20.5 k. A process.exit() in the same
 * tick (a second SIGINT) still gets its last lines out: the 'exit' hook writes them, and libuv
 * hands a write to the pipe at once when the pipe has room.
 */
import type { Writable } from 'node:stream';
import type { LogEvent } from '../events.js';
import { formatJson, formatText } from '../format.js';
import { FLUSH_DEADLINE_MS, type LogSink, type Severity, type SinkContext } from '../logger.js';

/** Output not yet taken by the reader, in bytes, beyond which events are dropped. */
export const STDOUT_BUFFER_LIMIT = 4 * 1024 * 1024;

export interface StdoutSinkOptions {
  readonly json: boolean;
  readonly threshold?: Severity;
  readonly stream?: Writable;
  readonly context?: SinkContext;
  readonly bufferLimit?: number;
}

/** The flush of each sink holding lines until the next tick, run at once if the process exits first. */
const holding = new Set<() => void>();
let exitHook = false;

function flushAll(): void {
  for (const flush of holding) flush();
}

export class StdoutSink implements LogSink {
  readonly name = 'stdout';
  readonly threshold: Severity;
  readonly json: boolean;
  readonly #stream: Writable;
  readonly #context: SinkContext | undefined;
  readonly #limit: number;
  /** Events dropped in the current episode of a reader that does not keep up. */
  #droppedNow = 0;
  #broken = false;
  /** This tick's lines, written together on the next tick. */
  #pending = '';

  constructor(options: StdoutSinkOptions) {
    this.json = options.json;
    this.threshold = options.threshold ?? 'info';
    this.#stream = options.stream ?? process.stdout;
    this.#context = options.context;
    this.#limit = options.bufferLimit ?? STDOUT_BUFFER_LIMIT;
    // Without a listener, EPIPE (the reader went away) would be an uncaught exception.
    this.#stream.on('error', this.#onError);
  }

  readonly #onError = (error: Error): void => {
    if (this.#broken) return;
    this.#broken = true;
    this.#context?.report(this.name, 'error', `cannot write to standard output (${error.message}); its events are dropped from now on`);
  };

  write(event: LogEvent): void {
    if (this.#broken || this.#stream.writableLength + this.#pending.length > this.#limit) {
      if (this.#droppedNow++ === 0 && !this.#broken) {
        this.#context?.report(this.name, 'warning', `standard output is not being read fast enough; events are dropped until it catches up`);
      }
      this.#context?.dropped(this.name, 1);
      return;
    }
    if (this.#droppedNow > 0) {
      this.#context?.report(this.name, 'notice', `standard output caught up; ${this.#droppedNow} events were dropped meanwhile`);
      this.#droppedNow = 0;
    }
    if (this.#pending === '') {
      holding.add(this.#flush);
      if (!exitHook) {
        exitHook = true;
        process.on('exit', flushAll);
      }
      process.nextTick(this.#flush);
    }
    this.#pending += `${this.json ? formatJson(event) : formatText(event)}\n`;
  }

  readonly #flush = (): void => {
    const text = this.#pending;
    if (text === '') return;
    this.#pending = '';
    holding.delete(this.#flush);
    if (!this.#broken) this.#stream.write(text);
  };

  /** Waits (at most `deadlineMs`) until the reader has taken everything. stdout itself stays open. */
  close(deadlineMs = FLUSH_DEADLINE_MS): Promise<void> {
    this.#flush();
    const stream = this.#stream;
    if (this.#broken || stream.writableLength === 0) return this.#detach();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, deadlineMs);
      // The callback of an empty write runs once everything before it has been handed over.
      stream.write('', () => {
        clearTimeout(timer);
        resolve();
      });
    }).then(() => this.#detach());
  }

  #detach(): Promise<void> {
    this.#stream.off('error', this.#onError);
    // Keep one listener so a late EPIPE is not an uncaught exception.
    if (this.#stream.listenerCount('error') === 0) this.#stream.on('error', () => {});
    return Promise.resolve();
  }
}
