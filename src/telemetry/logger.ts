/**
 * The supervisor's logger: every event — from children or from the supervisor itself — goes through
 * `log()` to each sink whose level admits it. Sinks never throw into the caller and never make it
 * wait: each queues (bounded) and writes asynchronously, so the supervisor's event loop keeps
 * taking reports, serving metrics and supervising children whatever a log destination does.
 */
import type { LogEvent, LogLevel, MessageEvent } from './events.js';

/** Syslog severities, most severe first; a sink's threshold admits its level and everything above. */
export const SEVERITY_ORDER = ['emerg', 'alert', 'crit', 'err', 'warning', 'notice', 'info', 'debug'] as const;
export type Severity = (typeof SEVERITY_ORDER)[number];

const LEVEL_SEVERITY: Readonly<Record<LogLevel, Severity>> = {
  error: 'err',
  warning: 'warning',
  notice: 'notice',
  info: 'info',
  debug: 'debug',
};

/** The severity of an event: denials are warnings, failed connections errors, the rest info. */
export function severityOf(event: LogEvent): Severity {
  switch (event.kind) {
    case 'message':
      return LEVEL_SEVERITY[event.level];
    case 'deny':
      return 'warning';
    case 'connection':
      return event.event_type === 'error' ? 'err' : 'info';
  }
}

export function admits(threshold: Severity, severity: Severity): boolean {
  return SEVERITY_ORDER.indexOf(severity) <= SEVERITY_ORDER.indexOf(threshold);
}

/** How long a sink may take to write out what it holds at shutdown or when it is replaced. */
export const FLUSH_DEADLINE_MS = 2_000;

export interface LogSink {
  /** `stdout`, `jsonlog` or `syslog`: the `sink` label of packetpony_log_events_dropped_total. */
  readonly name: string;
  /** The least severe level this sink takes. */
  readonly threshold: Severity;
  /** Queues the event; never blocks, never throws. */
  write(event: LogEvent, severity: Severity): void;
  /** Reopen files (SIGUSR1). */
  reopen?(): void;
  /**
   * Writes out what is queued, for at most `deadlineMs` (what is left then is dropped and counted),
   * and releases the destination.
   */
  close(deadlineMs?: number): Promise<void>;
}

/** What a sink reports to the rest of the daemon. */
export interface SinkContext {
  /** `count` events were thrown away: the queue was full or the destination failed. */
  dropped(sink: string, count: number): void;
  /**
   * A failure (or the recovery from one) an operator must hear about. Sinks say it once per
   * episode, not per event, so a dead destination cannot flood the other sinks.
   */
  report(sink: string, level: LogLevel, message: string): void;
}

export class Logger {
  #sinks: LogSink[];

  constructor(sinks: LogSink[]) {
    this.#sinks = sinks;
  }

  log(event: LogEvent): void {
    const severity = severityOf(event);
    for (const sink of this.#sinks) {
      if (admits(sink.threshold, severity)) sink.write(event, severity);
    }
  }

  message(level: LogLevel, message: string, fields?: MessageEvent['fields']): void {
    this.log({ kind: 'message', timestamp: Date.now(), level, message, ...(fields ? { fields } : {}) });
  }

  info(message: string, fields?: MessageEvent['fields']): void {
    this.message('info', message, fields);
  }

  notice(message: string, fields?: MessageEvent['fields']): void {
    this.message('notice', message, fields);
  }

  warn(message: string, fields?: MessageEvent['fields']): void {
    this.message('warning', message, fields);
  }

  error(message: string, fields?: MessageEvent['fields']): void {
    this.message('error', message, fields);
  }

  /**
   * A sink's failure or recovery: said on stderr (the last resort, which journald also captures)
   * and in every other sink, never in the one that failed.
   */
  fromSink(sinkName: string, level: LogLevel, message: string): void {
    process.stderr.write(`packetpony: log sink ${sinkName}: ${message}\n`);
    const event: MessageEvent = { kind: 'message', timestamp: Date.now(), level, message: `log sink ${sinkName}: ${message}`, fields: { sink: sinkName } };
    const severity = severityOf(event);
    for (const sink of this.#sinks) {
      if (sink.name !== sinkName && admits(sink.threshold, severity)) sink.write(event, severity);
    }
  }

  get sinks(): readonly LogSink[] {
    return this.#sinks;
  }

  reopen(): void {
    for (const sink of this.#sinks) sink.reopen?.();
  }

  /**
   * Replaces the sinks (configuration reload). Sinks present in both lists keep running untouched;
   * the others are flushed and closed.
   */
  async replaceSinks(sinks: LogSink[]): Promise<void> {
    const old = this.#sinks;
    this.#sinks = sinks;
    await Promise.all(old.filter((sink) => !sinks.includes(sink)).map((sink) => sink.close()));
  }

  /** Flushes every sink, each for at most `deadlineMs`, and closes them. */
  async close(deadlineMs = FLUSH_DEADLINE_MS): Promise<void> {
    await Promise.all(this.#sinks.map((sink) => sink.close(deadlineMs)));
  }
}
