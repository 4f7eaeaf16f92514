/**
 * A listener's targets when it has a pool — several targets, or health checks (usesTargetPool):
 * the TargetPool that chooses, the HealthChecker that feeds it, the target states for the
 * packetpony_target_up gauge (sent whole with the next counter report, only when one changes), and
 * the log messages of state changes and refused clients (aggregated). A listener without a pool
 * never creates one, so it dials its one target exactly as before.
 *
 * TCP failover: a connection whose target refuses or does not answer tries the next target the
 * pool chooses (never one it tried), at most MAX_DIAL_ATTEMPTS targets in all, each getting an equal
 * share of tcp.connect_timeout, which still bounds the whole dial. The target that failed is marked
 * down for every later connection too.
 */
import { formatEndpoint } from '../config/address.js';
import { usesTargetPool, type ListenerConfig } from '../config/types.js';
import type { LogEvent } from '../telemetry/events.js';
import { MessageAggregator } from '../telemetry/message-aggregator.js';
import type { ListenerStats } from '../telemetry/stats.js';
import { HealthChecker } from './health-check.js';
import type { TargetStates } from '../ipc/protocol.js';
import { TargetPool, type PoolTarget, type TargetStateChange } from './target-pool.js';
import { defaultResolver, type TargetResolver } from './target-resolver.js';

/** Targets one TCP connection tries at most. */
export const MAX_DIAL_ATTEMPTS = 3;
/** How often UDP target names are looked up again (through the resolver's cache). */
const RESOLVE_INTERVAL_MS = 10_000;
/** How often repeated refusals are summed up in one log line. */
const AGGREGATE_INTERVAL_MS = 10_000;

/** One TCP connection's dial across targets. */
export interface TargetDial {
  target: PoolTarget;
  /** Targets this connection already tried, once it fails over. */
  tried: Set<PoolTarget> | null;
}

export interface TargetRouterDeps {
  readonly config: ListenerConfig;
  readonly stats: ListenerStats;
  readonly emit: (event: LogEvent) => void;
  readonly resolver?: TargetResolver;
  /** The states a previous child of the listener last reported: down targets start down. */
  readonly targetStates?: TargetStates | null;
}

export class TargetRouter {
  readonly pool: TargetPool;
  /** Per-target share of connect_timeout when failing over (0: only connect_timeout). */
  readonly attemptTimeoutMs: number;
  readonly #config: ListenerConfig;
  readonly #stats: ListenerStats;
  readonly #emit: (event: LogEvent) => void;
  readonly #resolver: TargetResolver;
  readonly #checker: HealthChecker;
  readonly #problems: MessageAggregator;
  readonly #inherited: TargetStates | null;
  #timers: NodeJS.Timeout[] = [];
  #running = false;
  /** UDP: a target went down (its sessions are ended, see udp-listener.ts). */
  onDown: ((target: PoolTarget) => void) | undefined;

  /** The router of a listener that needs one, else null. */
  static create(deps: TargetRouterDeps): TargetRouter | null {
    return usesTargetPool(deps.config) ? new TargetRouter(deps) : null;
  }

  constructor(deps: TargetRouterDeps) {
    const config = deps.config;
    this.#config = config;
    this.#stats = deps.stats;
    this.#emit = deps.emit;
    this.#resolver = deps.resolver ?? defaultResolver;
    this.#inherited = deps.targetStates ?? null;
    const checks = config.health_check;
    this.pool = new TargetPool(config.targets, {
      balance: config.balance,
      // Without health_check, a probe that connects once brings a target back.
      rise: checks?.rise ?? 1,
      fall: checks?.fall ?? 1,
      needsAddress: config.protocol === 'udp',
      onChange: (change) => this.#changed(change),
    });
    this.#checker = new HealthChecker({
      pool: this.pool,
      protocol: config.protocol,
      settings: checks,
      proxyProtocol: config.proxy_protocol,
      probeTimeoutMs: config.tcp.connect_timeout,
      resolver: this.#resolver,
    });
    this.#problems = new MessageAggregator(deps.emit);
    const connect = config.tcp.connect_timeout;
    this.attemptTimeoutMs = connect > 0 ? Math.floor(connect / Math.min(MAX_DIAL_ATTEMPTS, config.targets.length)) : 0;
  }

  /**
   * Reports the initial states (every target up, but those a previous child last saw down),
   * resolves UDP targets, starts the checks.
   */
  async start(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    if (this.#inherited !== null) this.#startDown(this.pool.inherit(this.#inherited));
    this.#stats.targets = this.pool.states();
    if (this.#config.protocol === 'udp') {
      await this.#resolveAll();
      this.#every(RESOLVE_INTERVAL_MS, () => void this.#resolveAll());
    }
    this.#every(AGGREGATE_INTERVAL_MS, () => this.#problems.flush());
    this.#checker.start();
  }

  /**
   * Stops checking (the listener stopped accepting: a successor, if any, checks from now on). No
   * target state is reported afterwards, so the successor's are the only ones the gauge shows.
   */
  stop(): void {
    this.#running = false;
    this.#checker.stop();
    for (const timer of this.#timers) clearInterval(timer);
    this.#timers = [];
    this.#problems.flush();
    this.#stats.targets = null;
  }

  /** Where a new TCP connection from `clientIp` goes first; null: every target is down. */
  dial(clientIp: string): TargetDial | null {
    const target = this.pool.pick(clientIp);
    return target === undefined ? null : { target, tried: null };
  }

  /**
   * The dial's current target failed with `reason`: marks it down and chooses the next, if the
   * connection may try another. Returns the new target, or undefined.
   */
  failover(dial: TargetDial, clientIp: string, reason: string): PoolTarget | undefined {
    this.pool.connectFailed(dial.target, reason);
    const tried = (dial.tried ??= new Set());
    tried.add(dial.target);
    if (tried.size >= MAX_DIAL_ATTEMPTS) return undefined;
    const next = this.pool.pick(clientIp, tried);
    if (next !== undefined) dial.target = next;
    return next;
  }

  /** A client connection to `target` could not be made. */
  connectFailed(target: PoolTarget, reason: string): void {
    this.pool.connectFailed(target, reason);
  }

  /** UDP: a new session's target, or undefined when none is up. */
  pickForSession(clientIp: string): PoolTarget | undefined {
    return this.pool.pick(clientIp);
  }

  /** A client was refused because no target is up: counted, and logged without flooding. */
  refused(clientIp: string, clientPort: number): void {
    const name = this.#config.name;
    this.#stats.error('no_target');
    this.#problems.report('no_target', 'error', `listener ${name}: refused client ${formatEndpoint(clientIp, clientPort)}: every target is down`, {
      listener: name,
    });
  }

  /** Says which targets start down, and why no client goes there until they answer. */
  #startDown(targets: readonly PoolTarget[]): void {
    const name = this.#config.name;
    for (const target of targets) {
      this.#emit({
        kind: 'message',
        timestamp: Date.now(),
        level: 'notice',
        message: `listener ${name}: target ${target.address}${target.backup ? ' (backup)' : ''} starts down, as the listener's previous process last saw it; it is back once it answers its checks`,
        fields: { listener: name, target: target.address, state: 'down' },
      });
    }
    if (targets.length > 0 && !this.pool.anyUp) this.#everyTargetDown();
  }

  #everyTargetDown(): void {
    const name = this.#config.name;
    this.#emit({
      kind: 'message',
      timestamp: Date.now(),
      level: 'error',
      message: `listener ${name}: every target is down; new clients are refused until one is up again`,
      fields: { listener: name },
    });
  }

  #every(ms: number, fn: () => void): void {
    const timer = setInterval(fn, ms);
    timer.unref();
    this.#timers.push(timer);
  }

  #changed(change: TargetStateChange): void {
    if (!this.#running) return;
    const name = this.#config.name;
    const { target, up } = change;
    this.#stats.targets = this.pool.states();
    const state = up ? 'up' : 'down';
    this.#emit({
      kind: 'message',
      timestamp: Date.now(),
      level: up ? 'notice' : 'warning',
      message: `listener ${name}: target ${target.address}${target.backup ? ' (backup)' : ''} is ${state}: ${change.reason}`,
      fields: { listener: name, target: target.address, state },
    });
    if (!up && !change.anyUp) this.#everyTargetDown();
    if (!up) {
      this.#checker.targetDown(target);
      this.onDown?.(target);
    }
  }

  async #resolveAll(): Promise<void> {
    await Promise.all(
      this.pool.targets.map(async (target) => {
        const host = target.endpoint.host === '' ? '127.0.0.1' : target.endpoint.host;
        try {
          const known = this.#resolver.peek(host) ?? (await this.#resolver.resolve(host));
          const first = known[0]!;
          if (target.resolved?.address !== first.address) target.resolved = first;
        } catch (err) {
          // The last known address (if any) is kept; a target never resolved gets no session.
          this.#stats.error('target_resolve');
          this.#problems.report(`resolve:${target.address}`, 'warning', `listener ${this.#config.name}: target ${target.address}: ${(err as Error).message}`, {
            listener: this.#config.name,
            target: target.address,
          });
        }
      }),
    );
  }
}
