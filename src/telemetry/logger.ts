/**
 * The supervisor's logger: every event — from children or from the supervisor itself — goes through
 * `log()` to each sink whose level admits it. Sinks never throw into the caller.
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

export interface LogSink {
  readonly name: string;
  /** The least severe level this sink takes. */
  readonly threshold: Severity;
  write(event: LogEvent, severity: Severity): void;
  /** Reopen files (SIGUSR1). */
  reopen?(): void;
  /** Flush what is queued (bounded by the sink's own deadline) and release resources. */
  close(): Promise<void>;
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

  reopen(): void {
    for (const sink of this.#sinks) sink.reopen?.();
  }

  /** Replaces the sinks (configuration reload); the old ones are flushed and closed. */
  async replaceSinks(sinks: LogSink[]): Promise<void> {
    const old = this.#sinks;
    this.#sinks = sinks;
    await Promise.all(old.map((sink) => sink.close()));
  }

  async close(): Promise<void> {
    await Promise.all(this.#sinks.map((sink) => sink.close()));
  }
}
