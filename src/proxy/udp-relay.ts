/**
 * The UDP relay of one listener: virtual sessions per client ip:port over a listening socket the
 * caller bound, each with its own connected upstream socket to the target. It knows sockets only:
 * no IPC, no log sinks, no rate-limit policy (that comes in as hooks).
 *
 * Caller's side of the contract
 * - Hand over a bound `dgram.Socket`; the relay adds its 'message', 'error' and 'close' listeners
 *   in start() and removes them in close(). The socket stays the caller's: close() leaves it open
 *   unless asked (`close({ closeSocket: true })`). If the caller closes it first, the relay closes
 *   itself (every session ends with its close event), since no reply could be sent any more. On
 *   the batched path (below) Node no longer reads the socket once start() has handed it over, and
 *   close() does not give it back: datagrams then wait in the kernel, as for a hand-over.
 * - `await start()` once: it resolves the target (rejects with a ResolveError, counted as
 *   'target_resolve', if a name does not resolve) and then starts relaying.
 * - The relay counts into the ListenerStats: bytes and packets each way, `accepted` and `active`
 *   per session, the duration histogram when a session ends, `rateLimited` and
 *   `rateLimitDrop('session_limit')` per datagram refused at the session cap, and errors
 *   (`oversize_datagram`, `session_create`, `target_read`, `target_write`, `target_resolve`,
 *   `client_read`). Refusals by `admit` and drops by `meter` are the hooks' to count and log: they
 *   know the reason and see their own answer.
 * - Hooks must not throw.
 *
 * Sessions. The first datagram from a new client address and port asks `admit` (if any), then the
 * session cap, then opens an upstream socket connected to the target's current address (a name is
 * resolved at start and refreshed in the background, never per datagram or per session: see
 * target-resolver.ts). Later datagrams from that client reuse the session; what the target sends
 * to the upstream socket goes back to the client from the listening socket. A connected upstream
 * socket only accepts datagrams from the target, so no third party can inject replies.
 *
 * Session cap. `maxSessions` is the listener's max_total_connections when set. Otherwise
 * DEFAULT_MAX_SESSIONS (10,000) applies, because every session holds a file descriptor and a
 * local ephemeral port: Linux hands out ~28,000 ephemeral ports (32768–60999) to the whole host,
 * so an unbounded table lets a flood of spoofed source ports starve every listener (and every other
 * program) of ports and descriptors. 10,000 is far above what a DNS, game or VPN relay of one
 * listener needs at once, and leaves most of the port range to the rest. At the cap, a new
 * client's datagram is dropped, counted and reported through `onDrop`; existing sessions go on.
 * `admit` is asked before the cap, so a refused attempt still counts as an attempt for the policy
 * (its verdict is released at once).
 *
 * Datagram size. A datagram longer than udp.buffer_size, either way, is dropped whole — never
 * forwarded truncated — counted as the error 'oversize_datagram' and reported through `onDrop`.
 * (The socket reads into a 64 KiB buffer, larger than any UDP payload, so the length is exact;
 * a buffer_size of 65536 or more thus lets every datagram through.)
 * Empty datagrams are forwarded.
 *
 * Metering. `meter(admission, bytes, direction, clientPort)` is asked per datagram, both ways,
 * before it is forwarded (the port is there for the caller's logs). 0 forwards it; -1 drops it; a positive answer (a TCP-style pause: the address is
 * ahead of its throttled pace) also drops it, since UDP can only be throttled by dropping — holding
 * datagrams back would need a queue and add latency a datagram protocol does not expect. Any other
 * negative answer (the policy's "violation, log it") forwards it.
 *
 * Idle timeout (udp.session_timeout) and session logging (udp.logging): udp-sessions.ts says
 * the rules. An idle session's end closes its upstream socket and releases its admission.
 *
 * ICMP port unreachable. A connected upstream socket learns that the target has no listener as
 * ECONNREFUSED on its next receive. That is counted ('target_read', or 'target_write' if a send
 * reports it) and reported through `onError`, and the session is kept: the target may be
 * restarting, and ending the session would only make the client's next datagram open a new one
 * (a socket, an open and a close event per datagram while the target is down). The session ends
 * by idling out as usual; its close event carries the last error unless a reply came after it.
 *
 * Per-session plans (`plan` hook): with several targets the caller chooses each new session's
 * target (the relay's own `target` is then null and never resolved), and with PROXY protocol v2 it
 * gives the header that goes before every datagram the session sends to the target (sent as one
 * datagram from two buffers, no copy). Both are decided once per session; the per-datagram cost is
 * one null check. A plan of undefined (no target is up) drops the datagram and opens nothing.
 * endSessions() ends the sessions of a target that went down, so their clients' next datagrams
 * open sessions on a live one.
 *
 * Datagram paths (udp-path.ts): the rules above are this file's; reading and sending are the
 * path's, chosen at start(): batched (udp-batched-path.ts, the addon's recvmmsg and sendmmsg; the
 * default where it is built) or Node's dgram sockets (udp-node-path.ts). The same logic either way;
 * one difference: a send the kernel cannot take at once (a full socket buffer) is dropped on the
 * batched path, where Node's would queue it in memory.
 */
import type dgram from 'node:dgram';
import type { ErrorType, ListenerStats } from '../telemetry/stats.js';
import { pauseReading } from '../platform/index.js';
import { loadUdpBatch, udpBatchUnavailableReason } from './udp-batch.js';
import { BatchedDatagramPath } from './udp-batched-path.js';
import { NodeDatagramPath } from './udp-node-path.js';
import type { DatagramPath, DatagramRelay, UdpDirection } from './udp-path.js';
import { defaultResolver } from './target-resolver.js';
import { IdleSweep, SessionLog, SessionTable, sweepPeriod, UdpSession } from './udp-sessions.js';
import { closeQuietly, connectUpstream, UdpTarget } from './udp-upstream.js';
import type { UdpAdmission, UdpRelayHooks, UdpRelayOptions, UdpSessionPlan } from './udp-relay-options.js';

export type { UdpDirection } from './udp-path.js';
export type { UdpAdmission, UdpDropReason, UdpRelayHooks, UdpRelayOptions, UdpSessionPlan } from './udp-relay-options.js';

/** The session cap when the listener sets no max_total_connections; see the header. */
export const DEFAULT_MAX_SESSIONS = 10_000;
/** How often a target name is looked up again (through the resolver's cache). */
export const DEFAULT_RESOLVE_INTERVAL_MS = 10_000;
/**
 * The most a datagram can carry, rounded up to 64 KiB (65,527 bytes over IPv6, 65,507 over IPv4):
 * a slot this large never truncates one, and it is the addon's largest slot.
 */
const MAX_DATAGRAM_BYTES = 64 * 1024;

const ALLOWED: UdpAdmission = Object.freeze({ allow: true });
const MAPPED_PREFIX = '::ffff:';

export class UdpRelay<A extends UdpAdmission = UdpAdmission> implements DatagramRelay<A> {
  // For the datagram paths (DatagramRelay, udp-path.ts), not for callers: the table and the
  // largest datagram forwarded.
  readonly table = new SessionTable<A>();
  readonly bufferSize: number;

  readonly #socket: dgram.Socket;
  readonly #target: UdpTarget;
  readonly #stats: ListenerStats;
  readonly #maxSessions: number;
  readonly #log: SessionLog<A>;
  readonly #sweep: IdleSweep<A>;
  readonly #clock: () => number;
  readonly #admit: ((clientIp: string, clientPort: number) => A) | undefined;
  readonly #meter: ((admission: A, bytes: number, direction: UdpDirection, clientPort: number) => number) | undefined;
  readonly #release: ((admission: A) => void) | undefined;
  readonly #onDrop: UdpRelayHooks<A>['onDrop'];
  readonly #onError: UdpRelayHooks<A>['onError'];
  readonly #plan: UdpRelayHooks<A>['plan'];
  readonly #planEnded: UdpRelayHooks<A>['planEnded'];
  readonly #batched: boolean | undefined;
  /** How datagrams get in and out; null before start(). */
  #path: DatagramPath<A> | null = null;
  #started = false;
  #closed = false;
  /** False after stopReceiving(): no new session is opened. */
  #accepting = true;
  #closing: Promise<void> | null = null;

  constructor(options: UdpRelayOptions<A>) {
    const { udp } = options;
    this.#socket = options.socket;
    this.#target = new UdpTarget(options.target, options.resolver ?? defaultResolver, options.resolveIntervalMs ?? DEFAULT_RESOLVE_INTERVAL_MS);
    this.#stats = options.stats;
    this.#maxSessions = options.maxSessions !== undefined && options.maxSessions > 0
      ? options.maxSessions
      : DEFAULT_MAX_SESSIONS;
    // Past the largest possible datagram a larger size changes nothing but the batch arena's size.
    this.bufferSize = Math.min(udp.buffer_size, MAX_DATAGRAM_BYTES);
    this.#clock = options.clock ?? (() => performance.now());
    const hooks = options.hooks ?? {};
    this.#log = new SessionLog<A>(options.listenerName, udp.logging, hooks.onEvent);
    const timeout = udp.session_timeout > 0 ? udp.session_timeout : Infinity;
    const sweepMs = options.sweepIntervalMs ?? sweepPeriod(timeout, this.#log.interval);
    this.#sweep = new IdleSweep<A>(this.table, this.#log, timeout, sweepMs, this.#clock, (session, now) => this.#end(session, now));
    this.#admit = hooks.admit;
    this.#meter = hooks.meter;
    this.#release = hooks.release;
    this.#onDrop = hooks.onDrop;
    this.#onError = hooks.onError;
    this.#plan = hooks.plan;
    this.#planEnded = hooks.planEnded;
    this.#batched = options.batched;
  }

  /** Whether datagrams go through the batched path (udp-batched-path.ts); known after start(). */
  get batched(): boolean {
    return this.#path?.batched ?? false;
  }

  /** Open sessions. */
  get sessionCount(): number {
    return this.table.size;
  }

  /** The address new sessions connect to ('' before start()). */
  get targetAddress(): string {
    return this.#target.ip;
  }

  /** Resolves the target, then relays until close(). */
  async start(): Promise<void> {
    if (this.#started) throw new Error('UdpRelay.start() called twice');
    this.#started = true;
    try {
      await this.#target.resolve();
    } catch (err) {
      this.error('target_resolve', err, undefined, 0);
      throw err;
    }
    if (this.#closed) return;
    this.#path = this.#choosePath();
    this.#socket.on('error', this.#onSocketError);
    this.#socket.on('close', this.#onSocketClose);
    this.#sweep.start();
    this.#target.startRefreshing((err) => {
      if (!this.#closed) this.error('target_resolve', err, undefined, 0);
    });
  }

  /** The batched path where the addon is there (see `batched` in the options), Node's otherwise. */
  #choosePath(): DatagramPath<A> {
    if (this.#batched !== false) {
      const addon = loadUdpBatch();
      const path = addon === null ? udpBatchUnavailableReason() : BatchedDatagramPath.take(this, this.#socket, addon);
      if (typeof path !== 'string') return path;
      if (this.#batched === true) {
        throw new Error(addon === null ? `UdpRelay: the batched path is not available: ${path}` : `UdpRelay: ${path}`);
      }
    }
    return new NodeDatagramPath(this, this.#socket);
  }

  /**
   * For a hand-over to another process sharing the listening socket: stop reading it, so that
   * new datagrams wait in the kernel for the successor, while existing sessions keep relaying the
   * target's replies until they idle out or close() is called. Returns false if Node did not let
   * reading stop; then datagrams read anyway still reach existing sessions, and new clients'
   * datagrams are dropped rather than opening sessions here.
   */
  stopReceiving(): boolean {
    this.#accepting = false;
    return this.#path === null ? pauseReading(this.#socket) : this.#path.stopReceiving();
  }

  /**
   * Shutdown: every session ends now (close events subject to the thresholds), timers stop, the
   * relay's listeners leave the socket. Resolves when every upstream socket (and, with
   * `closeSocket`, the listening socket) has closed. Idempotent.
   */
  close(options: { readonly closeSocket?: boolean } = {}): Promise<void> {
    if (this.#closing !== null) return this.#closing;
    this.#closed = true;
    this.#sweep.stop();
    this.#target.stop();
    const socket = this.#socket;
    socket.off('error', this.#onSocketError);
    socket.off('close', this.#onSocketClose);
    const pending: Promise<void>[] = [];
    const now = this.#clock();
    for (const session of this.table.values()) {
      pending.push(new Promise((resolve) => session.upstream.once('close', resolve)));
      this.#end(session, now);
    }
    this.#path?.close();
    if (options.closeSocket === true) {
      pending.push(new Promise((resolve) => {
        try {
          socket.close(resolve);
        } catch {
          resolve(); // already closed
        }
      }));
    }
    this.#closing = Promise.all(pending).then(() => undefined);
    return this.#closing;
  }

  /** Ends every planned session whose plan `test` selects (close events as usual). */
  endSessions(test: (plan: UdpSessionPlan) => boolean): void {
    const now = this.#clock();
    for (const session of this.table.values()) {
      if (session.plan !== null && test(session.plan as UdpSessionPlan)) this.#end(session, now);
    }
  }

  // ---- per datagram, for the paths (DatagramRelay) --------------------------------------------

  fromClient(session: UdpSession<A>, bytes: number): boolean {
    const meter = this.#meter;
    if (meter !== undefined) {
      const verdict = meter(session.admission, bytes, 'sent', session.clientPort);
      if (verdict > 0 || verdict === -1) return false;
    }
    session.bytesSent += bytes;
    session.packetsSent++;
    const stats = this.#stats;
    stats.bytesSent += bytes;
    stats.packetsSent++;
    if ((session.logBytesLeft -= bytes) <= 0) this.#log.update(session, this.#clock());
    return true;
  }

  fromTarget(session: UdpSession<A>, bytes: number): boolean {
    const meter = this.#meter;
    if (meter !== undefined) {
      const verdict = meter(session.admission, bytes, 'received', session.clientPort);
      if (verdict > 0 || verdict === -1) return false;
    }
    session.bytesReceived += bytes;
    session.packetsReceived++;
    if (session.lastError !== null) session.lastError = null;
    const stats = this.#stats;
    stats.bytesReceived += bytes;
    stats.packetsReceived++;
    if ((session.logBytesLeft -= bytes) <= 0) this.#log.update(session, this.#clock());
    return true;
  }

  // ---- sessions -------------------------------------------------------------------------------

  openSession(address: string, port: number): UdpSession<A> | undefined {
    if (!this.#accepting) return undefined;
    const clientIp = clientIpOf(address);
    // Without an admit hook every client is allowed; the constant then stands in for A, which
    // the meter and release hooks (the only readers) cannot tell apart from an allowing verdict.
    let admission = ALLOWED as A;
    if (this.#admit !== undefined) {
      admission = this.#admit(clientIp, port);
      if (!admission.allow) return undefined;
    }
    if (this.table.size >= this.#maxSessions) {
      this.#release?.(admission);
      this.#stats.rateLimited++;
      this.#stats.rateLimitDrop('session_limit');
      this.#onDrop?.('session_limit', clientIp, port, 'sent');
      return undefined;
    }
    let plan: UdpSessionPlan | undefined;
    if (this.#plan !== undefined) {
      plan = this.#plan(clientIp, port);
      if (plan === undefined) {
        this.#release?.(admission);
        this.#onDrop?.('no_target', clientIp, port, 'sent');
        return undefined;
      }
    }
    const to = plan?.target ?? null;
    const target = this.#target;
    const targetIp = to === null ? target.ip : to.ip;
    const targetPort = to === null ? target.port : to.port;
    let session: UdpSession<A> | null = null;
    let now = 0;
    try {
      const upstream = connectUpstream(targetIp, targetPort, to === null ? target.family : to.family);
      now = this.#clock();
      session = new UdpSession<A>(address, port, clientIp, targetIp, targetPort, admission, upstream, now, this.#log.bytes);
    } catch (err) {
      this.error('session_create', err, clientIp, port);
    }
    if (session !== null && plan !== undefined) {
      session.plan = plan;
      session.header = plan.header;
    }
    if (session === null || !this.#path!.attach(session)) {
      if (plan !== undefined) this.#planEnded?.(plan);
      this.#release?.(admission);
      this.#onDrop?.('session_create', clientIp, port, 'sent');
      return undefined;
    }
    session.upstream.on('error', (err: Error) => this.upstreamError(session, err));
    this.table.add(session);
    this.#stats.accepted++;
    this.#stats.active++;
    this.#log.opened(session, now);
    return session;
  }

  upstreamError(session: UdpSession<A>, err: Error): void {
    const syscall = (err as NodeJS.ErrnoException).syscall;
    const type: ErrorType = syscall === 'send' ? 'target_write' : 'target_read';
    session.lastError = describeError(err);
    this.error(type, err, session.clientIp, session.clientPort);
  }

  /** Ends a session: table, socket, counters, release, close event. */
  #end(session: UdpSession<A>, now: number): void {
    if (!session.open) return;
    session.open = false;
    this.table.delete(session);
    this.#path?.detach(session);
    closeQuietly(session.upstream);
    const stats = this.#stats;
    stats.active--;
    stats.observeDuration((now - session.startedAt) / 1000);
    if (session.plan !== null) this.#planEnded?.(session.plan as UdpSessionPlan);
    this.#release?.(session.admission);
    this.#log.closed(session, now);
  }

  // ---- errors and drops -----------------------------------------------------------------------

  oversize(address: string, port: number, direction: UdpDirection): void {
    this.#stats.error('oversize_datagram');
    this.#onDrop?.('oversize_datagram', clientIpOf(address), port, direction);
  }

  error(type: ErrorType, err: unknown, clientIp: string | undefined, clientPort: number): void {
    this.#stats.error(type);
    this.#onError?.(type, err instanceof Error ? err : new Error(String(err)), clientIp, clientPort);
  }

  readonly #onSocketError = (err: Error): void => {
    this.error('client_read', err, undefined, 0);
  };

  readonly #onSocketClose = (): void => {
    void this.close();
  };
}

/** The address for logs and policy: `::ffff:a.b.c.d` (an IPv4 client of a dual-stack socket) as IPv4. */
function clientIpOf(address: string): string {
  return address.startsWith(MAPPED_PREFIX) && address.indexOf('.', MAPPED_PREFIX.length) !== -1
    ? address.slice(MAPPED_PREFIX.length)
    : address;
}

function describeError(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED') return 'ECONNREFUSED: target port unreachable';
  return code !== undefined ? `${code}: ${err.message}` : err.message;
}
