/**
 * The supervisor: one ListenerGroup (its worker processes) per configured listener, the events they report routed to the
 * logger, live reconfiguration, and the orderly stop of everything.
 */
import { readConfig, type LoadOptions } from '../config/load.js';
import type { DaemonConfig, MainSettings } from '../config/types.js';
import { formatIssue, PacketPonyError } from '../errors.js';
import type { ReportMessage } from '../ipc/protocol.js';
import { decodeEvent } from '../ipc/wire-events.js';
import type { Logger } from '../telemetry/logger.js';
import type { ReloadResult } from '../telemetry/metrics/metrics.js';
import type { ListenerState } from './listener-child.js';
import { ListenerGroup } from './listener-group.js';
import { planReload } from './reload-plan.js';

export interface SupervisorHooks {
  /** Counters and state for metrics (the telemetry layer plugs in here). */
  report?(listener: string, report: ReportMessage, pid: number): void;
  childGone?(listener: string, pid: number): void;
  stateChanged?(listener: string, state: ListenerState): void;
  /** A worker's child died and will be restarted (worker 1 of a one-worker listener). */
  childRestarting?(listener: string, worker: number): void;
  /** A reload is starting (systemd: RELOADING=1). */
  reloading?(): void;
  /**
   * A reload's listeners are applied; `main` is set when the main file's settings are to be applied
   * too (log sinks, metrics server). Returns the final result, which may be worse (partial) when
   * those settings could not be applied.
   */
  reloaded?(result: ReloadResult, main: MainSettings | undefined): ReloadResult | Promise<ReloadResult>;
}

export class Supervisor {
  readonly #logger: Logger;
  readonly #hooks: SupervisorHooks;
  readonly #load: LoadOptions;
  readonly #children = new Map<string, ListenerGroup>();
  /** Removed listeners still finishing their connections. */
  readonly #leaving = new Set<ListenerGroup>();
  #config: DaemonConfig;
  #stopping: Promise<void> | undefined;
  #reloading: Promise<ReloadResult> = Promise.resolve('ok');

  constructor(config: DaemonConfig, logger: Logger, load: LoadOptions, hooks: SupervisorHooks = {}) {
    this.#config = config;
    this.#logger = logger;
    this.#load = load;
    this.#hooks = hooks;
  }

  get config(): DaemonConfig {
    return this.#config;
  }

  get listeners(): ListenerGroup[] {
    return [...this.#children.values()];
  }

  start(): void {
    for (const listener of this.#config.listeners) this.#add(listener);
  }

  #add(config: DaemonConfig['listeners'][number]): void {
    const child = new ListenerGroup(config, this.#logger, {
      report: (name, report, pid) => this.#onReport(name, report, pid),
      childGone: (name, pid) => this.#hooks.childGone?.(name, pid),
      stateChanged: (name, state) => this.#hooks.stateChanged?.(name, state),
      childRestarting: (name, worker) => this.#hooks.childRestarting?.(name, worker),
    });
    this.#children.set(config.name, child);
    child.start();
  }

  #onReport(name: string, report: ReportMessage, pid: number): void {
    for (const event of report.events) this.#logger.log(decodeEvent(event, report));
    if (report.dropped_events > 0) {
      this.#logger.warn(`listener ${name}: ${report.dropped_events} events were dropped because the supervisor could not keep up`, {
        listener: name,
        count: report.dropped_events,
      });
    }
    this.#hooks.report?.(name, report, pid);
  }

  /** Re-reads every file and applies what changed; reloads never overlap. */
  reload(trigger: string): Promise<ReloadResult> {
    if (this.#stopping) return Promise.resolve('rejected');
    this.#reloading = this.#reloading.then(() => this.#reload(trigger));
    return this.#reloading;
  }

  async #reload(trigger: string): Promise<ReloadResult> {
    if (this.#stopping) return 'rejected';
    this.#hooks.reloading?.();
    const outcome = await this.#apply(trigger).catch((error: unknown) => {
      this.#logger.error(`configuration reload failed: ${error instanceof Error ? error.message : String(error)}; the running configuration stays`);
      return { result: 'rejected' as const, summary: undefined };
    });
    const result = (await this.#hooks.reloaded?.(outcome.result, outcome.result === 'rejected' ? undefined : this.#config)) ?? outcome.result;
    if (outcome.summary) this.#logger.info(`configuration reloaded (${trigger})`, { ...outcome.summary, result });
    return result;
  }

  async #apply(trigger: string): Promise<{ result: ReloadResult; summary?: Record<string, number> }> {
    let report;
    try {
      report = readConfig(this.#load);
    } catch (error) {
      if (!(error instanceof PacketPonyError)) throw error;
      this.#logger.error(`configuration reload (${trigger}) rejected: ${error.message}; the running configuration stays`);
      return { result: 'rejected' };
    }
    for (const issue of report.issues) {
      if (issue.severity === 'error') this.#logger.error(`config: ${formatIssue(issue)}`);
      else this.#logger.warn(`config: ${formatIssue(issue)}`);
    }
    const running = new Map(this.listeners.map((l) => [l.name, l.config]));
    const plan = planReload(running, report);
    if (!plan.main) {
      this.#logger.error(`configuration reload (${trigger}) rejected: the main file has errors; everything keeps running as it was`);
      return { result: 'rejected' };
    }
    for (const name of plan.kept) {
      if (running.get(name) && report.files.some((f) => !f.ok && f.path === running.get(name)!.source_file)) {
        this.#logger.warn(`listener ${name}: its file has errors; the last good version keeps running`, { listener: name });
      }
    }
    for (const name of plan.conflicts) {
      this.#logger.error(`listener ${name}: not started: it clashes with a listener kept at its last good version`, { listener: name });
    }

    const timeout = plan.main.server.shutdown_timeout;
    // Removals first: they free addresses that additions may take over.
    for (const name of plan.remove) {
      const child = this.#children.get(name)!;
      this.#children.delete(name);
      this.#leaving.add(child);
      this.#logger.info(`listener ${name} removed; its open connections get up to ${timeout / 1000}s to finish`, { listener: name });
      void child.stop(timeout).then(() => this.#leaving.delete(child));
    }
    const changes = await Promise.all(
      plan.change.map(async (config) => {
        const outcome = await this.#children.get(config.name)!.replace(config, timeout);
        if (outcome.ok) this.#logger.info(`listener ${config.name} reconfigured`, { listener: config.name });
        else this.#logger.error(`listener ${config.name}: new configuration not applied: ${outcome.message}`, { listener: config.name });
        return outcome.ok;
      }),
    );
    for (const config of plan.add) {
      this.#logger.info(`listener ${config.name} added`, { listener: config.name });
      this.#add(config);
    }
    this.#config = { ...plan.main, listeners: this.listeners.map((l) => l.config) };

    const failed = report.errorCount > 0 || plan.conflicts.length > 0 || changes.includes(false);
    const summary = {
      added: plan.add.length,
      changed: plan.change.length,
      removed: plan.remove.length,
      unchanged: plan.unchanged.length - plan.kept.length,
      kept_last_good: plan.kept.length,
    };
    return { result: failed ? 'partial' : 'ok', summary };
  }

  /** Stops accepting everywhere at once, then waits for open connections up to shutdown_timeout. */
  shutdown(): Promise<void> {
    const timeout = this.#config.server.shutdown_timeout;
    this.#stopping ??= Promise.all([...this.listeners, ...this.#leaving].map((child) => child.stop(timeout))).then(() => undefined);
    return this.#stopping;
  }

  /** Stops everything now, without draining. */
  kill(): void {
    for (const child of [...this.listeners, ...this.#leaving]) child.kill();
  }
}
