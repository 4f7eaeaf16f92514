/**
 * A UDP listener in the child: the socket the supervisor handed over, the policy asked about each
 * new session, the sessions relayed by udp-relay.ts. Events leave through `emit`; repeated
 * problems (oversize datagrams, a target that is down) through an aggregator, never per datagram.
 *
 * Opt-in, decided once per session: with several targets or health checks a TargetRouter chooses
 * each session's target, and the sessions of a target that goes down are ended (their clients'
 * next datagrams go to a live one); with proxy_protocol v2 every datagram a session sends to the
 * target starts with a PROXY header naming the client and the listener's bound address.
 */
import dgram from 'node:dgram';
import type { AddressInfo } from 'node:net';
import { formatEndpoint } from '../config/address.js';
import { CONSUME_DROP, CONSUME_VIOLATION, normalizeAddress, type Ticket, type Verdict } from '../policy/index.js';
import { publicPathForced } from '../platform/index.js';
import { MessageAggregator } from '../telemetry/message-aggregator.js';
import { encodeV2, type HostPort } from './proxy-protocol.js';
import type { PoolTarget } from './target-pool.js';
import { TargetRouter } from './target-router.js';
import { udpBatchUnavailableReason } from './udp-batch.js';
import { ALL_PATHS_ON, UDP_BATCH_OFF_REASON } from './path-switches.js';
import type { ListenerDeps } from './tcp-listener.js';
import { DEFAULT_MAX_SESSIONS, UdpRelay, type UdpDirection, type UdpSessionPlan } from './udp-relay.js';

/** A session's plan, with the pool target it counts against (least_connections). */
interface RoutedPlan extends UdpSessionPlan {
  readonly poolTarget: PoolTarget | null;
}

/** After a drain starts, how long replies already on their way get before sessions are ended. */
const REPLY_GRACE_MS = 1000;

export class UdpListener {
  readonly #deps: ListenerDeps;
  readonly #family: 'udp4' | 'udp6';
  readonly #problems: MessageAggregator;
  /** Several targets or health checks; null: the one target. */
  readonly #router: TargetRouter | null;
  #relay: UdpRelay<Verdict> | undefined;

  constructor(deps: ListenerDeps, family: 'IPv4' | 'IPv6') {
    this.#deps = deps;
    this.#router = TargetRouter.create(deps);
    this.#family = family === 'IPv6' ? 'udp6' : 'udp4';
    this.#problems = new MessageAggregator(deps.emit);
    setInterval(() => this.#problems.flush(), 10_000).unref();
  }

  /** PACKETPONY_UDP_BATCH is not 0 (the child read it at start). */
  get #batchAllowed(): boolean {
    return (this.#deps.paths ?? ALL_PATHS_ON).udpBatch;
  }

  get active(): number {
    return this.#relay?.sessionCount ?? 0;
  }

  async listen(handle: object): Promise<AddressInfo> {
    const { config, stats } = this.#deps;
    const socket = dgram.createSocket({ type: this.#family });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(handle as never, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    const limiter = this.#deps.policy.limiter;
    const metered = config.rate_limits.max_bandwidth_per_ip > 0;
    const router = this.#router;
    if (router !== null) {
      router.onDown = (target) => this.#relay?.endSessions((plan) => (plan as RoutedPlan).poolTarget === target);
      await router.start();
    }
    const local = socket.address();
    const planned = router !== null || config.proxy_protocol === 'v2';
    this.#relay = new UdpRelay<Verdict>({
      listenerName: config.name,
      socket,
      target: router === null ? config.target : null,
      udp: config.udp,
      stats,
      // Off: Node's path; on: batched where the addon is built.
      ...(this.#batchAllowed ? {} : { batched: false }),
      // log_only lets a session over max_total_connections through, so there the relay's own
      // ceiling (the descriptor guard) is the only bound; otherwise the policy has already refused
      // at max_total_connections and the relay's cap is the same figure.
      maxSessions:
        config.rate_limits.action === 'log_only'
          ? Math.max(config.rate_limits.max_total_connections, DEFAULT_MAX_SESSIONS)
          : config.rate_limits.max_total_connections,
      hooks: {
        admit: (ip, port) => this.#admit(ip, port),
        ...(metered
          ? { meter: (verdict: Verdict, bytes: number, direction: UdpDirection, port: number) => this.#meter(verdict as Ticket, bytes, direction, port) }
          : {}),
        release: (verdict) => limiter.release(verdict as Ticket),
        onEvent: (event) => this.#deps.emit(event),
        onDrop: (reason, ip, port, direction) => this.#dropped(reason, ip, port, direction),
        ...(planned
          ? {
              plan: (ip: string, port: number) => this.#plan(ip, port, { ip: local.address, port: local.port }),
              planEnded: (plan: UdpSessionPlan) => {
                const target = (plan as RoutedPlan).poolTarget;
                if (target !== null) target.active--;
              },
            }
          : {}),
        onError: (type, error, ip, port) =>
          this.#problems.report(`error:${type}`, 'warning', `listener ${config.name}: ${type.replace('_', ' ')} error: ${error.message}`, {
            listener: config.name,
            ...(ip !== undefined ? { client: formatEndpoint(ip, port) } : {}),
          }),
      },
    });
    await this.#relay.start();
    if (!this.#relay.batched) this.#sayNodePath();
    return socket.address();
  }

  /**
   * Once per start, so that a slower UDP path never goes unnoticed: a warning where the batched
   * path should have been built (Linux) but could not be loaded, a plain line where it was turned
   * off or cannot exist.
   */
  #sayNodePath(): void {
    const name = this.#deps.config.name;
    // Chosen (PACKETPONY_UDP_BATCH=0, PACKETPONY_PUBLIC_PATH=1) or impossible (not Linux): said plainly.
    const allowed = this.#batchAllowed;
    const expected = process.platform === 'linux' && allowed && !publicPathForced();
    this.#deps.emit({
      kind: 'message',
      timestamp: Date.now(),
      level: expected ? 'warning' : 'info',
      message: `listener ${name}: UDP goes through Node's dgram sockets, at a quarter to a third of the batched path's speed: ${allowed ? udpBatchUnavailableReason() : UDP_BATCH_OFF_REASON}`,
      fields: { listener: name },
    });
  }

  /** A new session's target (with several) and PROXY header (with v2); undefined: no target is up. */
  #plan(ip: string, port: number, local: HostPort): RoutedPlan | undefined {
    const { config } = this.#deps;
    let poolTarget: PoolTarget | null = null;
    let target: UdpSessionPlan['target'] = null;
    if (this.#router !== null) {
      const picked = this.#router.pickForSession(ip);
      if (picked === undefined || picked.resolved === null) return undefined;
      poolTarget = picked;
      target = { ip: picked.resolved.address, port: picked.endpoint.port, family: picked.resolved.family };
      picked.active++;
    }
    const header = config.proxy_protocol === 'v2' ? encodeV2('udp', { ip, port }, local) : null;
    return { target, header, poolTarget };
  }

  #admit(ip: string, port: number): Verdict {
    const { policy, stats, denies, config } = this.#deps;
    const verdict = policy.admit(ip);
    if (!verdict.allow) {
      if (verdict.reason === 'acl' || verdict.reason === 'denylist') {
        stats.aclDenied++;
        stats.aclDrops++;
        denies.deny(normalizeAddress(ip), port, verdict.reason, 'deny');
      } else {
        stats.rateLimited++;
        stats.rateLimitDrop(verdict.reason);
        // on_store_down: closed refuses whatever rate_limits.action says.
        denies.deny(normalizeAddress(ip), port, verdict.reason, verdict.reason === 'store_down' ? 'drop' : config.rate_limits.action);
      }
    } else if (verdict.violation) {
      denies.deny(verdict.address, port, verdict.violation, config.rate_limits.action);
    }
    return verdict;
  }

  #meter(ticket: Ticket, bytes: number, direction: UdpDirection, port: number): number {
    const { policy, stats, denies, config } = this.#deps;
    const verdict = policy.limiter.consumeDatagram(ticket, bytes, direction === 'received');
    if (verdict === CONSUME_DROP) {
      stats.rateLimitDrop('bandwidth_limit');
      denies.deny(ticket.address, port, 'bandwidth_limit', config.rate_limits.action);
    } else if (verdict === CONSUME_VIOLATION) {
      denies.deny(ticket.address, port, 'bandwidth_limit', config.rate_limits.action);
    }
    return verdict;
  }

  #dropped(reason: string, ip: string, port: number, direction: UdpDirection): void {
    const { config, denies } = this.#deps;
    if (reason === 'session_limit') {
      denies.deny(ip, port, 'session_limit', 'drop');
    } else if (reason === 'no_target') {
      this.#router?.refused(ip, port);
    } else if (reason === 'oversize_datagram') {
      const from = direction === 'sent' ? `client ${formatEndpoint(ip, port)}` : `the target (for ${formatEndpoint(ip, port)})`;
      this.#problems.report('oversize', 'warning', `listener ${config.name}: dropped a datagram from ${from} larger than udp.buffer_size (${config.udp.buffer_size} bytes)`, {
        listener: config.name,
      });
    } else {
      this.#problems.report(`drop:${reason}`, 'warning', `listener ${config.name}: could not open a session for ${formatEndpoint(ip, port)}`, { listener: config.name });
    }
  }

  /** Stops taking datagrams: they wait in the socket for the next child, if there is one. */
  stopAccepting(): void {
    this.#relay?.stopReceiving();
    this.#router?.stop();
  }

  /** Lets replies already on their way arrive briefly, then ends every session with its close event. */
  async finish(deadlineMs: number): Promise<void> {
    if (this.active > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(deadlineMs, REPLY_GRACE_MS)));
    await this.#relay?.close({ closeSocket: true });
    this.#problems.flush();
  }
}
