/**
 * Every metric the daemon exposes, in one prom-client Registry owned by the supervisor (never the
 * global default registry: tests and embedders get independent instances).
 *
 * Traffic counters are fed from the children's StatsDelta reports (every 200 ms): deltas are added,
 * so totals are summed over all children of a listener and never go down when a child dies or is
 * replaced. `connections_active` and `tracked_addresses` are levels: the sum of the last level each
 * living child reported, and a child that is gone counts zero. Listener state and the children's process figures are read
 * when scraped. No label ever holds a client address: label values are listener names and small
 * fixed sets, so cardinality is bounded by the configuration.
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { usesTargetPool, type ListenerConfig, type Protocol } from '../../config/types.js';
import type { StatsDelta } from '../stats.js';
import { DURATION_BUCKETS, SYNC_BUCKETS } from '../stats.js';
import { BucketedHistogram } from './bucketed-histogram.js';
import { sampleProcess, type ProcessSample } from './process-sample.js';

/** The sum of the levels the living children of `listener` last reported. */
function levelSum(byPid: Map<string, Map<number, number>>, listener: string): number {
  let sum = 0;
  for (const level of byPid.get(listener)?.values() ?? []) sum += level;
  return sum;
}

function setLevel(byPid: Map<string, Map<number, number>>, listener: string, pid: number, level: number): void {
  let levels = byPid.get(listener);
  if (!levels) byPid.set(listener, (levels = new Map()));
  levels.set(pid, level);
}

/** What the metrics need to know about a listener (the supervisor's ListenerGroup fits). */
export interface ListenerView {
  readonly name: string;
  /** The target list and health_check matter only to packetpony_target_up. */
  readonly config: { readonly protocol: Protocol } & Partial<Pick<ListenerConfig, 'targets' | 'health_check'>>;
  /** `ready` counts as up. */
  readonly state: string;
  /**
   * Every living child process of the listener (serving or finishing connections), by worker
   * number: 1 to `workers:` (a one-worker listener's children are all worker 1). The
   * packetpony_child_* families carry it as their `worker` label.
   */
  readonly workerPids: ReadonlyMap<number, readonly number[]>;
}

/** The part of a pp:report the metrics use. */
export interface ReportCounts {
  readonly stats: StatsDelta;
  readonly dropped_events: number;
}

/** How a reload ended (the supervisor's answer, and the `result` label of packetpony_config_reloads_total). */
export type ReloadResult = 'ok' | 'rejected' | 'partial';

export const RELOAD_RESULTS: readonly ReloadResult[] = ['ok', 'rejected', 'partial'];
/** `sink` label values of packetpony_log_events_dropped_total; `ipc` is a child's own queue. */
export const DROP_SINKS = ['stdout', 'jsonlog', 'syslog', 'ipc'] as const;
const STATUSES = ['accepted', 'acl_denied', 'rate_limited'] as const;
const RATE_LIMIT_REASONS = ['connection_limit', 'attempt_limit', 'bandwidth_limit', 'total_limit'] as const;
/** How long one reading of the children's /proc files serves concurrent and repeated scrapes. */
const SAMPLE_TTL_MS = 500;
/** How often the nodejs_eventloop_lag_* figures sample the event loop's delay. */
const EVENT_LOOP_SAMPLE_MS = 1000;
/** PIDs remembered as gone, so a report that arrives after its child's exit cannot revive it. */
const GONE_PIDS_KEPT = 256;

function count(value: unknown): number {
  // The children are ours, but a counter must never be fed NaN or a negative number.
  return typeof value === 'number' && value > 0 && Number.isFinite(value) ? value : 0;
}

/** Per listener and living child PID: its worker number and what /proc said of it. */
type Samples = Map<string, Map<number, { readonly worker: string; readonly sample: ProcessSample }>>;

export class Metrics {
  readonly registry = new Registry();
  readonly #listeners: () => Iterable<ListenerView>;

  readonly #connections = new Counter({
    name: 'packetpony_connections_total',
    help: 'Total number of connections',
    labelNames: ['listener', 'protocol', 'status'] as const,
    registers: [this.registry],
  });
  readonly #active = new Gauge({
    name: 'packetpony_connections_active',
    help: 'Number of active connections',
    labelNames: ['listener', 'protocol'] as const,
    registers: [this.registry],
  });
  readonly #bytes = new Counter({
    name: 'packetpony_bytes_transferred_total',
    help: 'Total bytes transferred',
    labelNames: ['listener', 'direction'] as const,
    registers: [this.registry],
  });
  readonly #packets = new Counter({
    name: 'packetpony_packets_transferred_total',
    help: 'Total packets transferred (UDP only)',
    labelNames: ['listener', 'direction'] as const,
    registers: [this.registry],
  });
  readonly #duration = new BucketedHistogram({
    name: 'packetpony_connection_duration_seconds',
    help: 'Connection duration in seconds',
    labelNames: ['listener', 'protocol'] as const,
    buckets: DURATION_BUCKETS,
    registry: this.registry,
  });
  readonly #rateLimitDrops = new Counter({
    name: 'packetpony_rate_limit_drops_total',
    help: 'Total connections dropped due to rate limiting',
    labelNames: ['listener', 'reason'] as const,
    registers: [this.registry],
  });
  readonly #aclDrops = new Counter({
    name: 'packetpony_acl_drops_total',
    help: 'Total connections dropped due to ACL',
    labelNames: ['listener'] as const,
    registers: [this.registry],
  });
  readonly #errors = new Counter({
    name: 'packetpony_errors_total',
    help: 'Total errors encountered',
    labelNames: ['listener', 'type'] as const,
    registers: [this.registry],
  });
  readonly #restarts: Counter<'listener' | 'worker'> = new Counter({
    name: 'packetpony_child_restarts_total',
    help: "Restarts of a listener's child process after it died",
    labelNames: ['listener', 'worker'] as const,
    registers: [this.registry],
    // Every worker has its series from the start, at 0 until it first restarts.
    collect: () => {
      for (const listener of this.#listeners()) {
        for (const worker of listener.workerPids.keys()) this.#restarts.inc({ listener: listener.name, worker: String(worker) }, 0);
      }
    },
  });
  readonly #reloads = new Counter({
    name: 'packetpony_config_reloads_total',
    help: 'Configuration reloads by result: ok, partial (some files rejected), rejected (nothing applied)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly #tracked = new Gauge({
    name: 'packetpony_tracked_addresses',
    help: 'Client addresses whose per-IP rate-limit state the listener keeps (at most 100000; dropped once their windows have passed)',
    labelNames: ['listener'] as const,
    registers: [this.registry],
  });
  readonly #sharedUp = new Gauge({
    name: 'packetpony_shared_limits_up',
    help: "Whether a shared listener's store answers (1) or not (0), as its child last saw it",
    labelNames: ['listener'] as const,
    registers: [this.registry],
  });
  readonly #syncErrors = new Counter({
    name: 'packetpony_shared_limits_sync_errors_total',
    help: 'Exchanges of a shared listener with its store that failed, timed out or could not be made (no connection)',
    labelNames: ['listener'] as const,
    registers: [this.registry],
  });
  readonly #syncDuration = new BucketedHistogram({
    name: 'packetpony_shared_limits_sync_duration_seconds',
    help: 'How long the exchanges of a shared listener with its store took, in seconds',
    labelNames: ['listener'] as const,
    buckets: SYNC_BUCKETS,
    registry: this.registry,
  });
  readonly #logDropped = new Counter({
    name: 'packetpony_log_events_dropped_total',
    help: 'Log events dropped because a sink could not keep up or failed (ipc: dropped by a child before reaching the supervisor)',
    labelNames: ['sink'] as const,
    registers: [this.registry],
  });

  /** The protocol each listener's series were created with. */
  readonly #known = new Map<string, Protocol>();
  /** Last levels reported per listener and child PID. */
  readonly #activeByPid = new Map<string, Map<number, number>>();
  readonly #trackedByPid = new Map<string, Map<number, number>>();
  readonly #gone = new Set<number>();
  /** CPU seconds of a listener's children that are gone, per worker, so the CPU counter never goes down. */
  readonly #cpuOfGone = new Map<string, Map<string, number>>();
  /** Last CPU seconds read per listener and living child, with the child's worker. */
  readonly #cpuSeen = new Map<string, Map<number, { worker: string; seconds: number }>>();
  #samples: { at: number; value: Promise<Samples> } | undefined;
  /** The last target states a child of each listener reported (whole maps, the latest wins). */
  readonly #targetStates = new Map<string, Record<string, number>>();

  constructor(listeners: () => Iterable<ListenerView>) {
    this.#listeners = listeners;
    // The supervisor's own process_* and nodejs_* metrics, under their usual names. prom-client
    // samples the event loop's delay with a timer every 10 ms by default: a hundred wake-ups a
    // second, ~1.5 % of a core on an idle daemon, on the core its children relay on. Once a second
    // still sees any stall longer than that, and a loop kept busy by log events shows in every sample.
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
    for (const result of RELOAD_RESULTS) this.#reloads.inc({ result }, 0);
    for (const sink of DROP_SINKS) this.#logDropped.inc({ sink }, 0);

    const up: Gauge<'listener' | 'protocol'> = new Gauge({
      name: 'packetpony_listener_up',
      help: 'Whether the listener is bound and its child process is serving (1) or not (0)',
      labelNames: ['listener', 'protocol'] as const,
      registers: [this.registry],
      collect: () => {
        up.reset();
        for (const listener of this.#listeners()) {
          up.set({ listener: listener.name, protocol: listener.config.protocol }, listener.state === 'ready' ? 1 : 0);
        }
      },
    });

    // Series of the listener's current targets only: a target removed by a reload, or a listener
    // that no longer has a pool, leaves the output at the next scrape.
    const targetUp: Gauge<'listener' | 'target'> = new Gauge({
      name: 'packetpony_target_up',
      help: 'Whether a target of a listener with several targets or health checks is up (1) or down (0)',
      labelNames: ['listener', 'target'] as const,
      registers: [this.registry],
      collect: () => {
        targetUp.reset();
        for (const listener of this.#listeners()) {
          const states = this.#targetStates.get(listener.name);
          const config = listener.config;
          if (states === undefined || config.targets === undefined || config.health_check === undefined) continue;
          if (!usesTargetPool({ targets: config.targets, health_check: config.health_check })) continue;
          for (const { address } of config.targets) {
            const up = states[address];
            if (up !== undefined) targetUp.set({ listener: listener.name, target: address }, up === 1 ? 1 : 0);
          }
        }
      },
    });

    const rss: Gauge<'listener' | 'worker'> = new Gauge({
      name: 'packetpony_child_resident_memory_bytes',
      help: "Resident memory of the listener's child processes in bytes",
      labelNames: ['listener', 'worker'] as const,
      registers: [this.registry],
      collect: async () => this.#fill(rss, await this.#sampleChildren(), (s) => s.residentBytes),
    });
    const fds: Gauge<'listener' | 'worker'> = new Gauge({
      name: 'packetpony_child_open_fds',
      help: "Open file descriptors of the listener's child processes",
      labelNames: ['listener', 'worker'] as const,
      registers: [this.registry],
      collect: async () => this.#fill(fds, await this.#sampleChildren(), (s) => s.openFds),
    });
    const cpu: Counter<'listener' | 'worker'> = new Counter({
      name: 'packetpony_child_cpu_seconds_total',
      help: "User and system CPU time of the listener's child processes in seconds",
      labelNames: ['listener', 'worker'] as const,
      registers: [this.registry],
      collect: async () => {
        const samples = await this.#sampleChildren();
        cpu.reset();
        for (const [listener, byPid] of samples) {
          const seen = this.#cpuSeen.get(listener) ?? new Map<number, { worker: string; seconds: number }>();
          this.#cpuSeen.set(listener, seen);
          for (const [pid, { worker, sample }] of byPid) {
            seen.set(pid, { worker, seconds: Math.max(seen.get(pid)?.seconds ?? 0, sample.cpuSeconds) });
          }
          const totals = new Map(this.#cpuOfGone.get(listener));
          for (const { worker } of byPid.values()) if (!totals.has(worker)) totals.set(worker, 0);
          for (const { worker, seconds } of seen.values()) totals.set(worker, (totals.get(worker) ?? 0) + seconds);
          for (const [worker, seconds] of totals) cpu.inc({ listener, worker }, seconds);
        }
      },
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text for a scrape. */
  render(): Promise<string> {
    // Series of listeners that have not reported yet exist from the first scrape on.
    for (const listener of this.#listeners()) this.#ensure(listener.name, listener.config.protocol);
    return this.registry.metrics();
  }

  #protocolOf(listener: string): Protocol {
    for (const view of this.#listeners()) if (view.name === listener) return view.config.protocol;
    return this.#known.get(listener) ?? 'tcp';
  }

  /** Creates a listener's series at zero, so they are scraped before the first connection. */
  #ensure(listener: string, protocol: Protocol): void {
    if (this.#known.get(listener) === protocol) return;
    this.#known.set(listener, protocol);
    for (const status of STATUSES) this.#connections.inc({ listener, protocol, status }, 0);
    this.#active.set({ listener, protocol }, this.#activeSum(listener));
    this.#tracked.set({ listener }, levelSum(this.#trackedByPid, listener));
    this.#bytes.inc({ listener, direction: 'sent' }, 0);
    this.#bytes.inc({ listener, direction: 'received' }, 0);
    if (protocol === 'udp') {
      this.#packets.inc({ listener, direction: 'sent' }, 0);
      this.#packets.inc({ listener, direction: 'received' }, 0);
    }
    this.#duration.zero({ listener, protocol });
    for (const reason of RATE_LIMIT_REASONS) this.#rateLimitDrops.inc({ listener, reason }, 0);
    if (protocol === 'udp') this.#rateLimitDrops.inc({ listener, reason: 'session_limit' }, 0);
    this.#aclDrops.inc({ listener }, 0);
  }

  #activeSum(listener: string): number {
    return levelSum(this.#activeByPid, listener);
  }

  /** A child's pp:report: its counter deltas and current active level. */
  report(listener: string, report: ReportCounts, pid: number): void {
    const protocol = this.#protocolOf(listener);
    this.#ensure(listener, protocol);
    const s = report.stats;
    if (count(s.accepted)) this.#connections.inc({ listener, protocol, status: 'accepted' }, count(s.accepted));
    if (count(s.acl_denied)) this.#connections.inc({ listener, protocol, status: 'acl_denied' }, count(s.acl_denied));
    if (count(s.rate_limited)) this.#connections.inc({ listener, protocol, status: 'rate_limited' }, count(s.rate_limited));
    if (count(s.bytes_sent)) this.#bytes.inc({ listener, direction: 'sent' }, count(s.bytes_sent));
    if (count(s.bytes_received)) this.#bytes.inc({ listener, direction: 'received' }, count(s.bytes_received));
    if (count(s.packets_sent)) this.#packets.inc({ listener, direction: 'sent' }, count(s.packets_sent));
    if (count(s.packets_received)) this.#packets.inc({ listener, direction: 'received' }, count(s.packets_received));
    if (count(s.acl_drops)) this.#aclDrops.inc({ listener }, count(s.acl_drops));
    for (const reason in s.rate_limit_drops) {
      const n = count(s.rate_limit_drops[reason as keyof StatsDelta['rate_limit_drops']]);
      if (n) this.#rateLimitDrops.inc({ listener, reason }, n);
    }
    for (const type in s.errors) {
      const n = count(s.errors[type as keyof StatsDelta['errors']]);
      if (n) this.#errors.inc({ listener, type }, n);
    }
    if (count(s.duration_count) && Array.isArray(s.duration_counts)) {
      this.#duration.add({ listener, protocol }, s.duration_counts.map(count), count(s.duration_sum), count(s.duration_count));
    }
    if (count(report.dropped_events)) this.#logDropped.inc({ sink: 'ipc' }, count(report.dropped_events));
    if (typeof s.targets === 'object' && s.targets !== null && !this.#gone.has(pid)) this.#targetStates.set(listener, s.targets);
    const shared = s.shared;
    if (typeof shared === 'object' && shared !== null) {
      if (!this.#gone.has(pid)) this.#sharedUp.set({ listener }, shared.up === 1 ? 1 : 0);
      this.#syncErrors.inc({ listener }, count(shared.errors));
      if (count(shared.count) && Array.isArray(shared.counts)) {
        this.#syncDuration.add({ listener }, shared.counts.map(count), count(shared.sum), count(shared.count));
      }
    }

    if (!this.#gone.has(pid)) {
      setLevel(this.#activeByPid, listener, pid, count(s.active));
      this.#active.set({ listener, protocol }, this.#activeSum(listener));
      if (s.tracked !== undefined) {
        setLevel(this.#trackedByPid, listener, pid, count(s.tracked));
        this.#tracked.set({ listener }, levelSum(this.#trackedByPid, listener));
      }
    }
  }

  /** A child exited: its connections are no longer open, its CPU time is kept in the total. */
  childGone(listener: string, pid: number): void {
    this.#gone.add(pid);
    if (this.#gone.size > GONE_PIDS_KEPT) this.#gone.delete(this.#gone.values().next().value!);
    this.#activeByPid.get(listener)?.delete(pid);
    this.#trackedByPid.get(listener)?.delete(pid);
    const protocol = this.#known.get(listener);
    if (protocol) {
      this.#active.set({ listener, protocol }, this.#activeSum(listener));
      this.#tracked.set({ listener }, levelSum(this.#trackedByPid, listener));
    }
    const seen = this.#cpuSeen.get(listener);
    const cpu = seen?.get(pid);
    if (cpu !== undefined) {
      let gone = this.#cpuOfGone.get(listener);
      if (gone === undefined) this.#cpuOfGone.set(listener, (gone = new Map()));
      gone.set(cpu.worker, (gone.get(cpu.worker) ?? 0) + cpu.seconds);
      seen!.delete(pid);
    }
  }

  /** A worker's child died and will be restarted (worker: 1 for a one-worker listener). */
  childRestarting(listener: string, worker: number): void {
    this.#restarts.inc({ listener, worker: String(worker) });
  }

  /** A configuration reload ended (the reload code calls this once per reload). */
  configReloaded(result: ReloadResult): void {
    this.#reloads.inc({ result });
  }

  /** Log events a sink had to drop. */
  logEventsDropped(sink: string, n: number): void {
    if (count(n)) this.#logDropped.inc({ sink }, n);
  }

  #sampleChildren(): Promise<Samples> {
    const now = Date.now();
    if (this.#samples && now - this.#samples.at < SAMPLE_TTL_MS) return this.#samples.value;
    const value = (async () => {
      const samples: Samples = new Map();
      await Promise.all(
        [...this.#listeners()].map(async (listener) => {
          const byPid = new Map<number, { worker: string; sample: ProcessSample }>();
          samples.set(listener.name, byPid);
          const children = [...listener.workerPids].flatMap(([worker, pids]) => pids.map((pid) => [String(worker), pid] as const));
          await Promise.all(
            children.map(async ([worker, pid]) => {
              const sample = await sampleProcess(pid);
              if (sample) byPid.set(pid, { worker, sample });
            }),
          );
        }),
      );
      return samples;
    })();
    this.#samples = { at: now, value };
    return value;
  }

  #fill(gauge: Gauge<'listener' | 'worker'>, samples: Samples, pick: (sample: ProcessSample) => number): void {
    gauge.reset();
    for (const [listener, byPid] of samples) {
      const totals = new Map<string, number>();
      for (const { worker, sample } of byPid.values()) totals.set(worker, (totals.get(worker) ?? 0) + pick(sample));
      for (const [worker, total] of totals) gauge.set({ listener, worker }, total);
    }
  }
}
