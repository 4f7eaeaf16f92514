/**
 * The syslog sink: a bounded queue in front of a transport (udp or tcp through syslog-client, or
 * the local datagram socket), with at most IN_FLIGHT_LIMIT messages handed to the transport at a
 * time. When the transport fails — the server refuses, the connection drops, the local socket is
 * gone, or nothing was confirmed for STALL_MS (a server that stopped reading) — the messages in
 * flight go back to the front of the queue, the transport is closed, and a new one is tried after a
 * growing delay. Meanwhile new events wait in the queue; beyond its capacity they are dropped and
 * counted. The supervisor never waits for any of it.
 */
import type { LogEvent } from '../events.js';
import { FLUSH_DEADLINE_MS, type LogSink, type Severity, type SinkContext } from '../logger.js';
import { RetryDelay } from './retry-delay.js';
import { SinkQueue } from './sink-queue.js';

/** Messages handed to the transport and not yet confirmed. */
const IN_FLIGHT_LIMIT = 32;
/** Messages in flight and none confirmed for this long: the destination is treated as failed. */
const STALL_MS = 10_000;

export interface SyslogItem {
  readonly event: LogEvent;
  readonly severity: Severity;
}

/** One connection (or socket) to the syslog destination. */
export interface SyslogTransport {
  /**
   * Sends one message. `done(null)` once it has been handed to the kernel; `done(error)` when it
   * was not, and the transport is unusable. `done` may be called synchronously.
   */
  send(item: SyslogItem, done: (error: Error | null) => void): void;
  /** Releases the connection; later `done` calls are ignored by the sink. */
  close(): void;
}

/** Opens a transport (may throw); `broken` is called if it fails between two sends. */
export type SyslogConnect = (broken: (error: Error) => void) => SyslogTransport;

export interface SyslogSinkOptions {
  readonly connect: SyslogConnect;
  /** For messages: `udp localhost:514`, `unix /dev/log`. */
  readonly destination: string;
  readonly threshold: Severity;
  readonly context: SinkContext;
  readonly capacity?: number;
  readonly retry?: RetryDelay;
  /** Overrides STALL_MS (tests). */
  readonly stallMs?: number;
}

export class SyslogSink implements LogSink {
  readonly name = 'syslog';
  readonly threshold: Severity;
  readonly destination: string;
  readonly #connect: SyslogConnect;
  readonly #context: SinkContext;
  readonly #queue: SinkQueue<SyslogItem>;
  readonly #retry: RetryDelay;
  readonly #stallMs: number;
  readonly #inFlight: SyslogItem[] = [];
  #transport: SyslogTransport | undefined;
  /** Bumped whenever a transport is dropped, so its late callbacks are recognised and ignored. */
  #generation = 0;
  #retryTimer: NodeJS.Timeout | undefined;
  #stallTimer: NodeJS.Timeout | undefined;
  #pumpScheduled = false;
  #closing = false;
  #closed = false;
  /** The error of the current failure episode, if the destination is failing. */
  #failure: string | undefined;
  /** Events dropped since a message last got through. */
  #droppedSinceSuccess = 0;
  #idle: Array<() => void> = [];

  constructor(options: SyslogSinkOptions) {
    this.#connect = options.connect;
    this.destination = options.destination;
    this.threshold = options.threshold;
    this.#context = options.context;
    this.#queue = new SinkQueue(options.capacity);
    this.#retry = options.retry ?? new RetryDelay();
    this.#stallMs = options.stallMs ?? STALL_MS;
  }

  write(event: LogEvent, severity: Severity): void {
    if (this.#closing || !this.#queue.push({ event, severity })) {
      this.#drop(1);
      return;
    }
    this.#schedule();
  }

  #drop(count: number): void {
    this.#context.dropped(this.name, count);
    this.#droppedSinceSuccess += count;
  }

  /** Pumps on the next turn of the event loop: batches bursts and yields between rounds. */
  #schedule(): void {
    if (this.#pumpScheduled || this.#closed) return;
    this.#pumpScheduled = true;
    setImmediate(() => {
      this.#pumpScheduled = false;
      this.#pump();
    });
  }

  #pump(): void {
    if (this.#closed || this.#retryTimer) return;
    if (this.#queue.length === 0 && this.#inFlight.length === 0) {
      for (const wake of this.#idle.splice(0)) wake();
      return;
    }
    if (!this.#transport) {
      const generation = this.#generation;
      try {
        this.#transport = this.#connect((error) => {
          if (generation === this.#generation) this.#failed(error);
        });
      } catch (error) {
        this.#failed(error as Error);
        return;
      }
    }
    const transport = this.#transport;
    const generation = this.#generation;
    while (this.#inFlight.length < IN_FLIGHT_LIMIT && this.#queue.length > 0 && generation === this.#generation) {
      const item = this.#queue.shift()!;
      this.#inFlight.push(item);
      this.#armStall();
      transport.send(item, (error) => this.#sent(generation, item, error));
    }
  }

  #sent(generation: number, item: SyslogItem, error: Error | null): void {
    if (generation !== this.#generation) return;
    if (error) {
      this.#failed(error);
      return;
    }
    const at = this.#inFlight.indexOf(item);
    if (at >= 0) this.#inFlight.splice(at, 1);
    clearTimeout(this.#stallTimer);
    this.#stallTimer = undefined;
    if (this.#inFlight.length > 0) this.#armStall();
    this.#retry.succeeded();
    if (this.#failure !== undefined) {
      this.#context.report(this.name, 'notice', `${this.destination} takes events again; ${this.#droppedSinceSuccess} were dropped meanwhile`);
      this.#failure = undefined;
    }
    this.#droppedSinceSuccess = 0;
    this.#schedule();
  }

  #armStall(): void {
    if (this.#stallTimer) return;
    this.#stallTimer = setTimeout(() => {
      this.#stallTimer = undefined;
      this.#failed(new Error(`no message confirmed for ${this.#stallMs / 1000}s`));
    }, this.#stallMs);
    this.#stallTimer.unref();
  }

  /** The transport is unusable: put back what was in flight, drop the transport, retry later. */
  #failed(error: Error): void {
    this.#generation++;
    clearTimeout(this.#stallTimer);
    this.#stallTimer = undefined;
    const transport = this.#transport;
    this.#transport = undefined;
    try {
      transport?.close();
    } catch {
      // Already closed or never opened: nothing to release.
    }
    // Back to the front, oldest first, so order is kept; what no longer fits is dropped.
    for (let i = this.#inFlight.length - 1; i >= 0; i--) {
      if (!this.#queue.unshift(this.#inFlight[i]!)) this.#drop(1);
    }
    this.#inFlight.length = 0;
    const what = error.message;
    if (this.#failure === undefined) {
      this.#failure = what;
      this.#context.report(this.name, 'error', `cannot send to ${this.destination}: ${what}; retrying, events wait (up to ${this.#queue.capacity}) and beyond that are dropped`);
    }
    if (this.#closed) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#pump();
    }, this.#retry.failed());
    this.#retryTimer.unref();
  }

  /** Sends what is queued for at most `deadlineMs`, drops (and counts) the rest, closes. */
  async close(deadlineMs = FLUSH_DEADLINE_MS): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    if (this.#queue.length > 0 || this.#inFlight.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.#idle.push(resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, deadlineMs))),
      ]);
      clearTimeout(timer);
    }
    this.#closed = true;
    this.#generation++;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#stallTimer);
    const left = this.#queue.clear() + this.#inFlight.length;
    this.#inFlight.length = 0;
    if (left > 0) this.#context.dropped(this.name, left);
    try {
      this.#transport?.close();
    } catch {
      // Nothing useful to do about a failed close at shutdown.
    }
    this.#transport = undefined;
  }
}
