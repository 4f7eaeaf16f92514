/**
 * The supervisor's telemetry in one object: the logger with its sinks, the metrics registry, and
 * the hooks through which the Supervisor feeds them. Configuration reloads call applySettings();
 * the metrics and their counters stay, the sinks are rebuilt where their settings changed.
 */
import type { MainSettings } from '../config/types.js';
import type { LogEvent } from './events.js';
import { FLUSH_DEADLINE_MS, Logger, type LogSink, type SinkContext } from './logger.js';
import { Metrics, type ListenerView, type ReloadResult, type ReportCounts } from './metrics/metrics.js';
import { buildSinks } from './sinks/build-sinks.js';

/** The hooks the Supervisor calls (a structural match of its SupervisorHooks). */
export interface TelemetryHooks {
  report(listener: string, report: ReportCounts, pid: number): void;
  childGone(listener: string, pid: number): void;
  childRestarting(listener: string, worker: number): void;
}

export class Telemetry {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly hooks: TelemetryHooks;
  readonly #context: SinkContext;
  #sinks: Map<string, LogSink>;

  /** Opens the sinks `main.logging` asks for; throws LogSinkError when one cannot be set up. */
  constructor(main: Pick<MainSettings, 'logging'>, listeners: () => Iterable<ListenerView>) {
    this.metrics = new Metrics(listeners);
    this.logger = new Logger([]);
    this.#context = {
      dropped: (sink, count) => this.metrics.logEventsDropped(sink, count),
      report: (sink, level, message) => this.logger.fromSink(sink, level, message),
    };
    this.#sinks = buildSinks(main.logging, this.#context);
    void this.logger.replaceSinks([...this.#sinks.values()]);
    this.hooks = {
      report: (listener, report, pid) => this.metrics.report(listener, report, pid),
      childGone: (listener, pid) => this.metrics.childGone(listener, pid),
      childRestarting: (listener, worker) => this.metrics.childRestarting(listener, worker),
    };
  }

  /**
   * Applies a reloaded `logging:` section. Unchanged sinks keep running untouched; new ones are
   * opened before old ones are closed, so no event falls between them. Throws LogSinkError — with
   * the running sinks left as they were — when a new sink cannot be set up.
   */
  async applySettings(main: Pick<MainSettings, 'logging'>): Promise<void> {
    const next = buildSinks(main.logging, this.#context, this.#sinks);
    this.#sinks = next;
    await this.logger.replaceSinks([...next.values()]);
  }

  /** Counts a finished configuration reload: ok, partial or rejected. */
  configReloaded(result: ReloadResult): void {
    this.metrics.configReloaded(result);
  }

  /** SIGUSR1: reopen log files at their configured paths. */
  reopen(): void {
    this.logger.reopen();
  }

  log(event: LogEvent): void {
    this.logger.log(event);
  }

  /** Writes out queued events (each sink for at most `deadlineMs`) and closes the sinks. */
  close(deadlineMs = FLUSH_DEADLINE_MS): Promise<void> {
    return this.logger.close(deadlineMs);
  }
}
