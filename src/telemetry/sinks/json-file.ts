/**
 * The JSON log file (`logging.jsonlog.path`): one JSON object per line, appended.
 *
 * The file is opened once, synchronously, at start-up, so a missing or unwritable folder is a
 * start-up error naming the path. After that every write is asynchronous (libuv's thread pool): the
 * supervisor's event loop never waits for the disk. Events wait in a bounded queue and leave in
 * batches, one write in flight at a time, which keeps lines whole and in order.
 *
 * SIGUSR1 (logrotate's postrotate) asks for a reopen. Events that were waiting when it came are
 * written to the renamed file first; everything after goes to a new file at the configured path;
 * no event is lost or written twice. A failed write (a full disk) drops that
 * batch, counts it and is reported once until writing works again; it never stops the daemon.
 */
import { close, closeSync, open, openSync, write } from 'node:fs';
import { LogSinkError } from '../../errors.js';
import type { LogEvent } from '../events.js';
import { formatJson } from '../format.js';
import { FLUSH_DEADLINE_MS, type LogSink, type Severity, type SinkContext } from '../logger.js';
import { SinkQueue } from './sink-queue.js';

/** Events per write: large enough to make a burst cheap, small enough to keep a write short. */
const BATCH_EVENTS = 512;

/** `ENOSPC: no space left on device`: node's message without the repeated syscall and path. */
function describe(error: NodeJS.ErrnoException): string {
  return error.code ? `${error.code}: ${error.message.replace(/^[A-Z]+: /, '').replace(/, \w+ '.*'$/, '')}` : error.message;
}

export interface JsonFileSinkOptions {
  readonly path: string;
  readonly context: SinkContext;
  readonly threshold?: Severity;
  readonly capacity?: number;
}

export class JsonFileSink implements LogSink {
  readonly name = 'jsonlog';
  readonly threshold: Severity;
  readonly path: string;
  readonly #context: SinkContext;
  readonly #queue: SinkQueue<LogEvent>;
  #fd: number;
  /** A write or a reopen is in progress. */
  #busy = false;
  #reopenWanted = false;
  /** Events queued before the reopen was asked for: they belong in the old file. */
  #beforeReopen = 0;
  #closed = false;
  /** The error of the current failure episode, if writes are failing. */
  #failure: string | undefined;
  #lostInFailure = 0;
  #idle: Array<() => void> = [];

  /** Opens (creating if needed) the file for appending; throws LogSinkError when it cannot. */
  constructor(options: JsonFileSinkOptions) {
    this.path = options.path;
    this.#context = options.context;
    this.threshold = options.threshold ?? 'info';
    this.#queue = new SinkQueue(options.capacity);
    try {
      this.#fd = openSync(this.path, 'a', 0o640);
    } catch (error) {
      const err = error as NodeJS.ErrnoException;
      const hint = err.code === 'ENOENT' ? ': its folder does not exist; create it' : err.code === 'EACCES' ? ': the daemon may not write there; fix the permissions of the file or its folder' : '';
      throw new LogSinkError(`cannot open the JSON log file ${this.path} (logging.jsonlog.path) for appending: ${describe(err)}${hint}`, { cause: error });
    }
  }

  write(event: LogEvent): void {
    if (this.#closed || !this.#queue.push(event)) {
      this.#context.dropped(this.name, 1);
      return;
    }
    if (!this.#busy) this.#pump();
  }

  reopen(): void {
    if (this.#closed) return;
    this.#reopenWanted = true;
    this.#beforeReopen = this.#queue.length;
    if (!this.#busy) this.#pump();
  }

  #pump(): void {
    this.#beforeReopen = Math.min(this.#beforeReopen, this.#queue.length);
    if (this.#reopenWanted && this.#beforeReopen === 0) {
      this.#reopenWanted = false;
      this.#busy = true;
      open(this.path, 'a', 0o640, (error, fd) => {
        if (error) {
          this.#context.report(this.name, 'error', `cannot reopen ${this.path}: ${describe(error)}; events keep going to the file opened before`);
        } else {
          const old = this.#fd;
          this.#fd = fd;
          close(old, () => {});
        }
        this.#busy = false;
        this.#pump();
      });
      return;
    }
    if (this.#queue.length === 0) {
      for (const wake of this.#idle.splice(0)) wake();
      return;
    }
    let text = '';
    let count = 0;
    const batch = this.#reopenWanted ? Math.min(BATCH_EVENTS, this.#beforeReopen) : BATCH_EVENTS;
    while (count < batch && this.#queue.length > 0) {
      text += `${formatJson(this.#queue.shift()!)}\n`;
      count++;
    }
    if (this.#reopenWanted) this.#beforeReopen -= count;
    this.#busy = true;
    this.#writeAll(Buffer.from(text), 0, count);
  }

  /** Writes `buffer` from `offset` on; a short write (rare on files) continues where it stopped. */
  #writeAll(buffer: Buffer, offset: number, count: number): void {
    write(this.#fd, buffer, offset, buffer.length - offset, null, (error, written) => {
      if (error) {
        this.#failed(error, count);
      } else if (offset + written < buffer.length) {
        this.#writeAll(buffer, offset + written, count);
        return;
      } else if (this.#failure !== undefined) {
        this.#context.report(this.name, 'notice', `writing to ${this.path} works again; ${this.#lostInFailure} events were lost`);
        this.#failure = undefined;
        this.#lostInFailure = 0;
      }
      this.#busy = false;
      this.#pump();
    });
  }

  #failed(error: NodeJS.ErrnoException, count: number): void {
    this.#context.dropped(this.name, count);
    this.#lostInFailure += count;
    const what = describe(error);
    if (this.#failure === what) return;
    this.#failure = what;
    this.#context.report(this.name, 'error', `cannot write to ${this.path}: ${what}; its events are dropped until writing works again`);
  }

  /** Writes out the queue for at most `deadlineMs`, drops (and counts) the rest, closes the file. */
  async close(deadlineMs = FLUSH_DEADLINE_MS): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#busy || this.#queue.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.#idle.push(resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, deadlineMs))),
      ]);
      clearTimeout(timer);
    }
    const left = this.#queue.clear();
    if (left > 0) this.#context.dropped(this.name, left);
    // A write still in flight after the deadline finishes on the descriptor before it is closed.
    if (this.#busy) this.#idle.push(() => this.#closeFile());
    else this.#closeFile();
  }

  #closeFile(): void {
    try {
      closeSync(this.#fd);
    } catch {
      // Nothing useful to do about a failed close at shutdown.
    }
  }
}
