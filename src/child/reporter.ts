/**
 * The child's side of the channel: events and counters leave in batches, at most one batch in
 * flight. While the supervisor is slow to take them, events wait in a bounded queue; beyond it they
 * are dropped and counted (the counters themselves are never lost: they are deltas, summed later).
 */
import { REPORT_BATCH_EVENTS, REPORT_INTERVAL_MS, type ReportMessage } from '../ipc/protocol.js';
import { encodeConnection, type WireEvent } from '../ipc/wire-events.js';
import type { Protocol } from '../config/types.js';
import type { LogEvent } from '../telemetry/events.js';
import type { ListenerStats } from '../telemetry/stats.js';

const MAX_QUEUED_EVENTS = 20_000;

export type SendReport = (message: ReportMessage, done: (error: Error | null) => void) => void;

export class Reporter {
  readonly #stats: ListenerStats;
  readonly #send: SendReport;
  readonly #listener: string;
  readonly #protocol: Protocol;
  /** Events waiting, connection events already in their wire form (wire-events.ts). */
  #events: WireEvent[] = [];
  /** What the waiting connection events' timestamps are counted from: the first one's. */
  #t0 = 0;
  #dropped = 0;
  #inFlight = false;
  #timer: NodeJS.Timeout | undefined;
  #soon = false;
  #waiters: Array<() => void> = [];

  /** `listener` and `protocol`: the child's, which every event it reports carries. */
  constructor(stats: ListenerStats, send: SendReport, listener: string, protocol: Protocol) {
    this.#stats = stats;
    this.#send = send;
    this.#listener = listener;
    this.#protocol = protocol;
  }

  start(): void {
    this.#timer = setInterval(() => this.flush(), REPORT_INTERVAL_MS);
  }

  event(event: LogEvent): void {
    if (this.#events.length >= MAX_QUEUED_EVENTS) {
      this.#dropped++;
      return;
    }
    if (this.#events.length === 0) this.#t0 = event.timestamp;
    this.#events.push(event.kind === 'connection' ? encodeConnection(event, this.#t0) : event);
    if (this.#events.length >= REPORT_BATCH_EVENTS && !this.#soon) {
      this.#soon = true;
      setImmediate(() => {
        this.#soon = false;
        this.flush();
      });
    }
  }

  /** Sends what has accumulated, unless a batch is still on its way. */
  flush(): void {
    if (this.#inFlight) return;
    if (this.#events.length === 0 && this.#dropped === 0 && !this.#stats.changed) return;
    const events = this.#events.length > REPORT_BATCH_EVENTS * 4 ? this.#events.splice(0, REPORT_BATCH_EVENTS * 4) : this.#events;
    if (events === this.#events) this.#events = [];
    const message: ReportMessage = {
      type: 'pp:report',
      listener_name: this.#listener,
      protocol: this.#protocol,
      t0: this.#t0,
      events,
      stats: this.#stats.takeDelta(),
      dropped_events: this.#dropped,
    };
    this.#dropped = 0;
    this.#inFlight = true;
    this.#send(message, () => {
      this.#inFlight = false;
      for (const wake of this.#waiters.splice(0)) wake();
      if (this.#events.length >= REPORT_BATCH_EVENTS) this.flush();
    });
  }

  /** Final flush before exit: resolves once everything queued has been handed to the channel. */
  async drain(): Promise<void> {
    clearInterval(this.#timer);
    for (;;) {
      if (this.#inFlight) await new Promise<void>((resolve) => this.#waiters.push(resolve));
      if (this.#events.length === 0 && this.#dropped === 0 && !this.#stats.changed) return;
      this.flush();
    }
  }
}
