/**
 * A TCP listener in the child: accepts on the socket the supervisor handed over, asks the policy
 * about each client, relays admitted ones (tcp-relay.ts) and turns what happens into events and
 * counters. It knows nothing of IPC or log sinks: events leave through `emit`.
 *
 * Opt-in per listener, all at connection set-up (the relay's per-chunk path is the same): with
 * accept_proxy_protocol the client is the one a trusted front announces (proxy-header-reader.ts),
 * read before the policy decides; with several targets or health checks, a TargetRouter picks the
 * target and fails over (target-router.ts); with proxy_protocol, the relay sends the target a
 * PROXY protocol header first (proxy-protocol.ts).
 */
import type net from 'node:net';
import type { ListenerConfig } from '../config/types.js';
import { CONSUME_DROP, normalizeAddress, type ListenerPolicy, type Ticket } from '../policy/index.js';
import type { DenyAggregator } from '../telemetry/deny-aggregator.js';
import type { ConnectionEvent, LogEvent } from '../telemetry/events.js';
import { MessageAggregator } from '../telemetry/message-aggregator.js';
import type { ListenerStats } from '../telemetry/stats.js';
import { DescriptorWatch } from './descriptor-watch.js';
import { ProxyHeaderReader } from './proxy-header-reader.js';
import { bulkReadsUnder } from './read-buffers.js';
import { encodeV1, encodeV2, type HostPort } from './proxy-protocol.js';
import type { TargetStates } from '../ipc/protocol.js';
import { TargetRouter, type TargetDial } from './target-router.js';
import type { TcpEnd } from '../platform/tcp-end.js';
import { tcpEnds } from './tcp-path.js';
import { allowTcpAddon } from '../platform/tcp-reads.js';
import type { PathSwitches } from './path-switches.js';
import { DEFAULT_KEEPALIVE_MS, startTcpRelay, type Meter, type RelayCloseInfo, type RelayOpenInfo, type TcpRelay } from './tcp-relay.js';

interface ConnectionContext {
  readonly ticket: Ticket;
  readonly ip: string;
  readonly port: number;
  /** The target chosen and tried, with several targets; null otherwise. */
  readonly dial: TargetDial | null;
}

/**
 * The process is out of descriptors (EMFILE) or the system is (ENFILE): a local condition, not a
 * fact about the client or the target, and one that strikes every connection attempt at once.
 */
function descriptorShortage(text: string | undefined): 'EMFILE' | 'ENFILE' | undefined {
  const code = text === undefined ? undefined : /\b(EMFILE|ENFILE)\b/.exec(text)?.[1];
  return code === 'EMFILE' || code === 'ENFILE' ? code : undefined;
}

export interface ListenerDeps {
  readonly config: ListenerConfig;
  readonly policy: ListenerPolicy;
  readonly stats: ListenerStats;
  readonly denies: DenyAggregator;
  readonly emit: (event: LogEvent) => void;
  /** With several targets or health checks: the states a previous child last reported. */
  readonly targetStates?: TargetStates | null;
  /** The environment's path switches, read once at the child's start; absent (tests): the defaults, every path on. */
  readonly paths?: PathSwitches;
}

export class TcpListener {
  readonly #deps: ListenerDeps;
  readonly #server: net.Server;
  readonly #relays = new Set<TcpRelay<ConnectionContext>>();
  readonly #metered: boolean;
  /** Relays may read 1 MiB at a time: no bandwidth limit, or one far above that (read-buffers.ts). */
  readonly #bulkReads: boolean;
  /** Several targets or health checks; null: the one target, dialed as always. */
  readonly #router: TargetRouter | null;
  /** accept_proxy_protocol; null: the socket's peer is the client. */
  readonly #headers: ProxyHeaderReader | null;
  /** Problems that strike many connections at once (out of descriptors), said once per 10 s. */
  readonly #problems: MessageAggregator;
  /** A failed accept for want of descriptors never reaches node: looked for instead. */
  #descriptors: DescriptorWatch | undefined;
  /** Accepted connections inherit TCP_NODELAY and keepalive from the listening socket. */
  #preset = false;
  #idle: (() => void) | undefined;

  constructor(deps: ListenerDeps) {
    this.#deps = deps;
    this.#problems = new MessageAggregator(deps.emit);
    setInterval(() => this.#problems.flush(), 10_000).unref();
    this.#metered = deps.config.rate_limits.max_bandwidth_per_ip > 0;
    this.#bulkReads = bulkReadsUnder(deps.config.rate_limits);
    this.#router = TargetRouter.create(deps);
    const accept = deps.config.accept_proxy_protocol;
    this.#headers = accept === null ? null : new ProxyHeaderReader(deps.config.name, accept, deps.stats, deps.emit);
    if (this.#headers !== null) this.#headers.onSettled = () => this.#checkIdle();
    // Before the first end is made: the addon's part is chosen once per process, at first use.
    if (deps.paths !== undefined) allowTcpAddon(deps.paths.tcpAddon);
    // Only listens: accepted connections come as TcpEnds (tcpEnds().accept, once listening).
    this.#server = tcpEnds().createServer();
  }

  get active(): number {
    return this.#relays.size;
  }

  /** Starts accepting on a handle from the supervisor; resolves with the address once listening. */
  async listen(handle: object): Promise<net.AddressInfo> {
    const address = await this.#listen(handle);
    await this.#router?.start();
    return address;
  }

  #listen(handle: object): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (error: Error): void => reject(error);
      this.#server.once('error', onError);
      this.#server.listen(handle as net.ListenOptions, () => {
        this.#server.off('error', onError);
        // A failed accept (EMFILE, ENFILE…) is counted, never fatal; libuv keeps the listening
        // socket and retries.
        const onAcceptError = (error: NodeJS.ErrnoException): void => {
          this.#deps.stats.error('accept');
          this.#shortage(descriptorShortage(error.code) ?? 'EMFILE', error.code === undefined ? error.message : undefined);
        };
        this.#server.on('error', onAcceptError);
        const ends = tcpEnds();
        ends.accept(this.#server, (end) => this.#accept(end), onAcceptError);
        // The batched reads' epoll set (one descriptor per process) is made now, with the
        // listening socket, not at the first connection: the child's descriptor count is then
        // steady from the start, and a table filled by clients cannot stop it from being made.
        ends.prepare();
        this.#preset = ends.presetAcceptedOptions(this.#server, DEFAULT_KEEPALIVE_MS);
        this.#descriptors = new DescriptorWatch({
          inUse: () => 2 * this.#relays.size + (this.#headers?.pending ?? 0),
          onFull: () => {
            // At least one client was reset in silence: counted as the failed accept it was.
            this.#deps.stats.error('accept');
            this.#shortage('EMFILE');
          },
        });
        this.#descriptors.start();
        resolve(this.#server.address() as net.AddressInfo);
      });
    });
  }

  #accept(end: TcpEnd): void {
    const fd = end.descriptor;
    if (fd >= 0) this.#descriptors?.accepted(fd);
    else this.#descriptors?.acceptedUnnumbered();
    const peer = end.remote();
    if (peer === null) {
      end.close(); // gone before we looked
      return;
    }
    if (this.#headers !== null) {
      this.#headers.read(end, normalizeAddress(peer.address), peer.port, this.#onHeader);
      return;
    }
    this.#admit(end, peer.address, peer.port, null, undefined);
  }

  readonly #onHeader = (end: TcpEnd, client: HostPort, destination: HostPort | null, early: Buffer[] | undefined): void => {
    this.#admit(end, client.ip, client.port, destination, early);
  };

  /** `remote`: the client as the socket reports it or as a trusted front announced it. */
  #admit(end: TcpEnd, remote: string, port: number, destination: HostPort | null, early: Buffer[] | undefined): void {
    const { policy, stats, denies, config } = this.#deps;
    const verdict = policy.admit(remote);
    if (!verdict.allow) {
      if (verdict.reason === 'acl' || verdict.reason === 'denylist') {
        stats.aclDenied++;
        stats.aclDrops++;
        denies.deny(normalizeAddress(remote), port, verdict.reason, 'deny');
      } else {
        stats.rateLimited++;
        stats.rateLimitDrop(verdict.reason);
        // on_store_down: closed refuses whatever rate_limits.action says.
        denies.deny(normalizeAddress(remote), port, verdict.reason, verdict.reason === 'store_down' ? 'drop' : config.rate_limits.action);
      }
      end.reset();
      return;
    }
    if (verdict.violation) denies.deny(verdict.address, port, verdict.violation, config.rate_limits.action);
    const router = this.#router;
    const dial = router === null ? null : router.dial(verdict.address);
    if (router !== null && dial === null) {
      router.refused(verdict.address, port);
      policy.limiter.release(verdict);
      end.reset();
      return;
    }
    const context: ConnectionContext = { ticket: verdict, ip: verdict.address, port, dial };
    const relay = startTcpRelay<ConnectionContext>({
      client: end,
      clientPreset: this.#preset,
      ...(early !== undefined ? { early } : {}),
      target: dial === null ? config.target : dial.target.endpoint,
      tcp: config.tcp,
      stats,
      context,
      meter: this.#metered ? this.#meterFor(context) : undefined,
      readLimit: this.#metered ? this.#deps.policy.limiter.streamReadLimit(verdict) : undefined,
      bulkReads: this.#bulkReads,
      onOpen: (r, info) => this.#opened(r, info),
      onClose: (r, info) => this.#closed(r, info),
      failover: router === null ? undefined : this.#failover,
      attemptTimeoutMs: router === null ? undefined : router.attemptTimeoutMs,
      header: config.proxy_protocol === 'off' ? undefined : this.#proxyHeader(end, context, destination),
    });
    this.#relays.add(relay);
  }

  readonly #failover = (relay: TcpRelay<ConnectionContext>, reason: string) =>
    this.#router!.failover(relay.context.dial!, relay.context.ip, reason)?.endpoint;

  /** What the target learns: the client, and where it connected (as a front announced, or our socket). */
  #proxyHeader(end: TcpEnd, context: ConnectionContext, destination: HostPort | null): Buffer {
    const source = { ip: context.ip, port: context.port };
    const bound = destination === null ? end.local() : null;
    const local = destination ?? { ip: bound?.address ?? '0.0.0.0', port: bound?.port ?? 0 };
    return this.#deps.config.proxy_protocol === 'v1' ? encodeV1(source, local) : encodeV2('tcp', source, local);
  }

  #meterFor(context: ConnectionContext): Meter {
    const { policy, stats, denies, config } = this.#deps;
    const consume = policy.limiter.streamMeter(context.ticket);
    return (bytes) => {
      const verdict = consume(bytes);
      if (verdict >= 0) return verdict;
      // The relay ends the connection on a drop, but only the listener knows why: counted and
      // logged here, like every other refusal, so a cut transfer is never a silent one.
      if (verdict === CONSUME_DROP) stats.rateLimitDrop('bandwidth_limit');
      denies.deny(context.ip, context.port, 'bandwidth_limit', config.rate_limits.action);
      if (verdict === CONSUME_DROP) return verdict;
      // A violation answer carries no pause; a throttled chunk may still owe one, which nothing
      // more asks for: the pause due now (a chunk of 0 bytes costs nothing).
      const pause = consume(0);
      return pause > 0 ? pause : 0;
    };
  }

  /** A connection event; built in one shape (no spreads: this runs twice per connection). */
  #event(
    type: ConnectionEvent['event_type'],
    relay: TcpRelay<ConnectionContext>,
    targetIp: string,
    bytesSent = 0,
    bytesReceived = 0,
    durationMs = 0,
    error?: string,
  ): ConnectionEvent {
    const { config } = this.#deps;
    const event: { -readonly [K in keyof ConnectionEvent]: ConnectionEvent[K] } = {
      kind: 'connection',
      event_type: type,
      timestamp: Date.now(),
      listener_name: config.name,
      protocol: 'tcp',
      source_ip: relay.context.ip,
      source_port: relay.context.port,
      target_ip: targetIp || (relay.context.dial?.target.endpoint.host ?? config.target.host),
      target_port: relay.targetPort || config.target.port,
      bytes_sent: bytesSent,
      bytes_received: bytesReceived,
      duration_ms: durationMs,
    };
    if (error !== undefined) event.error = error;
    return event;
  }

  #opened(relay: TcpRelay<ConnectionContext>, info: RelayOpenInfo): void {
    const { stats, emit } = this.#deps;
    if (relay.context.dial !== null) relay.context.dial.target.active++;
    stats.accepted++;
    stats.active++;
    emit(this.#event('open', relay, info.target_ip));
  }

  #closed(relay: TcpRelay<ConnectionContext>, info: RelayCloseInfo): void {
    const { stats, emit, policy } = this.#deps;
    this.#relays.delete(relay);
    policy.limiter.release(relay.context.ticket);
    const dial = relay.context.dial;
    // A dial that failed for want of a descriptor says nothing about the target, and would say it
    // once per connection attempt: one aggregated report instead of an error event each.
    const shortage = info.opened ? undefined : descriptorShortage(info.error);
    if (dial !== null) {
      if (info.opened) dial.target.active--;
      else if (info.cause === 'dial_failed' && shortage === undefined) this.#router!.connectFailed(dial.target, info.error ?? 'connection failed');
    }
    if (info.opened) {
      stats.active--;
      stats.observeDuration(info.duration_ms / 1000);
      emit(this.#event('close', relay, info.target_ip, info.bytes_sent, info.bytes_received, info.duration_ms, info.error));
    } else if (shortage !== undefined) {
      this.#shortage(shortage);
    } else {
      emit(this.#event('error', relay, info.target_ip, 0, 0, info.duration_ms, info.error ?? 'connection failed'));
    }
    this.#checkIdle();
  }

  /** Out of descriptors (or another accept failure, `other`): reported, aggregated. */
  #shortage(code: 'EMFILE' | 'ENFILE', other?: string): void {
    const name = this.#deps.config.name;
    const message =
      other !== undefined
        ? `listener ${name}: cannot accept connections: ${other}`
        : code === 'EMFILE'
          ? `listener ${name}: out of file descriptors (EMFILE): new connections are reset; raise the open-files limit (LimitNOFILE= in the unit, ulimit -n) or set max_total_connections`
          : `listener ${name}: the system is out of file descriptors (ENFILE): new connections are reset; raise fs.file-max`;
    this.#problems.report(other !== undefined ? 'accept' : 'descriptors', 'error', message, { listener: name });
  }

  #checkIdle(): void {
    if (this.#relays.size === 0 && (this.#headers?.pending ?? 0) === 0) this.#idle?.();
  }

  /**
   * Stops accepting: the child's copy of the listening socket is closed at once. (net.Server's
   * close callback is not awaited: it only fires once every connection has ended.)
   */
  stopAccepting(): void {
    this.#server.close();
    this.#descriptors?.stop();
    // A successor (if any) checks the targets from now on.
    this.#router?.stop();
  }

  /** Lets open connections finish for up to `deadlineMs`, then resets the rest; resolves when none is left. */
  async finish(deadlineMs: number): Promise<void> {
    // Connections still sending their PROXY header were accepted: they are served too.
    if (this.#relays.size === 0 && (this.#headers?.pending ?? 0) === 0) {
      this.#headers?.close();
      return;
    }
    const idle = new Promise<void>((resolve) => {
      this.#idle = resolve;
    });
    const timer = setTimeout(() => {
      this.#headers?.abortAll();
      for (const relay of this.#relays) relay.destroy('shutdown: shutdown_timeout reached');
    }, deadlineMs);
    await idle;
    clearTimeout(timer);
    this.#headers?.close();
  }
}
