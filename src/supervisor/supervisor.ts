/**
 * The supervisor: one ListenerChild per configured listener, the events they report routed to the
 * logger, and the orderly stop of everything.
 */
import type { DaemonConfig } from '../config/types.js';
import type { ReportMessage } from '../ipc/protocol.js';
import type { Logger } from '../telemetry/logger.js';
import { ListenerChild, type ListenerState } from './listener-child.js';

export interface SupervisorHooks {
  /** Counters and state for metrics (the telemetry layer plugs in here). */
  report?(listener: string, report: ReportMessage, pid: number): void;
  childGone?(listener: string, pid: number): void;
  stateChanged?(listener: string, state: ListenerState): void;
}

export class Supervisor {
  readonly #logger: Logger;
  readonly #hooks: SupervisorHooks;
  readonly #children = new Map<string, ListenerChild>();
  #config: DaemonConfig;
  #stopping: Promise<void> | undefined;

  constructor(config: DaemonConfig, logger: Logger, hooks: SupervisorHooks = {}) {
    this.#config = config;
    this.#logger = logger;
    this.#hooks = hooks;
  }

  get config(): DaemonConfig {
    return this.#config;
  }

  get listeners(): ListenerChild[] {
    return [...this.#children.values()];
  }

  start(): void {
    for (const listener of this.#config.listeners) {
      const child = new ListenerChild(listener, this.#logger, {
        report: (name, report, pid) => this.#onReport(name, report, pid),
        childGone: (name, pid) => this.#hooks.childGone?.(name, pid),
        stateChanged: (name, state) => this.#hooks.stateChanged?.(name, state),
      });
      this.#children.set(listener.name, child);
      child.start();
    }
  }

  #onReport(name: string, report: ReportMessage, pid: number): void {
    for (const event of report.events) this.#logger.log(event);
    if (report.dropped_events > 0) {
      this.#logger.warn(`listener ${name}: ${report.dropped_events} events were dropped because the supervisor could not keep up`, {
        listener: name,
        count: report.dropped_events,
      });
    }
    this.#hooks.report?.(name, report, pid);
  }

  /** Stops accepting everywhere at once, then waits for open connections up to shutdown_timeout. */
  shutdown(): Promise<void> {
    this.#stopping ??= Promise.all(this.listeners.map((child) => child.stop(this.#config.server.shutdown_timeout))).then(() => undefined);
    return this.#stopping;
  }

  /** Stops everything now, without draining. */
  kill(): void {
    for (const child of this.listeners) child.kill();
  }
}
