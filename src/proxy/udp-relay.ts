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
 * Idle timeout (udp.session_timeout): no datagram forwarded in either direction for that long ends
 * the session, closes its upstream socket and releases its admission. Dropped datagrams are no
 * activity. One interval timer per relay sweeps the table every eighth of the shortest of
 * session_timeout and periodic_log_interval (10 ms to 1 s); the hot path only bumps packet
 * counters, and the sweep compares them with what it saw last time. A session thus ends between
 * 1× session_timeout and that plus one sweep period after its last datagram, never early.
 *
 * ICMP port unreachable. A connected upstream socket learns that the target has no listener as
 * ECONNREFUSED on its next receive. That is counted ('target_read', or 'target_write' if a send
 * reports it) and reported through `onError`, and the session is kept: the target may be
 * restarting, and ending the session would only make the client's next datagram open a new one
 * (a socket, an open and a close event per datagram while the target is down). The session ends
 * by idling out as usual; its close event carries the last error unless a reply came after it.
 *
 * Session logging (udp.logging), filtered here so suppressed events never leave the relay:
 * - open: when the session is created, if log_session_start. It cannot know how long or big the
 *   session will be, so min_log_duration and min_log_bytes do not apply to it.
 * - update: once periodic_log_interval has passed or periodic_log_bytes (both directions) moved
 *   since the session started or since the last update trigger, whichever comes first; 0 turns a
 *   trigger off. Sent only if the session is by then at least min_log_duration old and has moved at
 *   least min_log_bytes; a trigger that fires too early is consumed all the same, and the next one
 *   counts from it. The interval is checked at sweep resolution, the bytes exactly.
 * - close: when the session ends (idle timeout, close()), if log_session_close and the session
 *   lasted at least min_log_duration and moved at least min_log_bytes.
 *
 * Per-session plans (`plan` hook): with several targets the caller chooses each new session's
 * target (the relay's own `target` is then null and never resolved), and with PROXY protocol v2 it
 * gives the header that goes before every datagram the session sends to the target (sent as one
 * datagram from two buffers, no copy). Both are decided once per session; the per-datagram cost is
 * one null check. A plan of undefined (no target is up) drops the datagram and opens nothing.
 * endSessions() ends the sessions of a target that went down, so their clients' next datagrams
 * open sessions on a live one.
 *
 * Hot path (per datagram): one Map lookup by port number and four number comparisons (or one
 * string comparison), the meter if any, one queued send, plain number increments. No clock read,
 * no closure, no logging, no allocation of ours. Two ways in and out, the same logic:
 * - Batched (udp-batch.ts, a small native addon; the default where it is built): the sockets are
 *   read natively with recvmmsg, a turn of the event loop at a time, and the relay runs once per
 *   batch over shared tables; replies to clients leave in one sendmmsg. Under the benchmark's
 *   request/response load this moved the relay from ×0.20 to ×0.83–0.94 of no proxy: 15 µs of CPU
 *   per reply, where Node's path below takes 43–55, nine tenths of it in Node, libuv and the kernel.
 * - Node's (src/platform/dgram-internals.ts): datagrams come straight from the sockets' native handles and go
 *   straight to them: no 'message' emit, and no per-send argument checks, address lookup,
 *   process.nextTick or request object, which dgram.Socket#send costs on the unconnected listening
 *   socket; what remains is Node's Buffer and rinfo of each received datagram. Where Node's
 *   internals are not as expected, the public dgram API is used instead, with the same behaviour.
 * One difference: a send the kernel cannot take at once (a full socket buffer) is dropped on the
 * batched path, where Node's would queue it in memory.
 */
import dgram from 'node:dgram';
import { isIP } from 'node:net';
import { constants as osConstants } from 'node:os';
import type { Endpoint, UdpLoggingSettings, UdpSettings } from '../config/types.js';
import type { ConnectionEvent, ConnectionEventType } from '../telemetry/events.js';
import type { ErrorType, ListenerStats } from '../telemetry/stats.js';
import {
  datagramSender, interceptDatagrams, pauseReading, resumeReading, takeOverReading, type DatagramSender,
} from '../platform/index.js';
import {
  addressOf, DatagramBatch, loadUdpBatch, R_ADDR, R_ID, R_LENGTH, R_OFFSET, R_PORT, R_SCOPE, R_TRUNCATED,
  RECV_STRIDE, udpBatchUnavailableReason,
} from './udp-batch.js';
import { socketError } from '../platform/tcp-end.js';
import { defaultResolver, type TargetResolver } from './target-resolver.js';
import { SessionTable, UdpSession } from './udp-sessions.js';

/** The session cap when the listener sets no max_total_connections; see the header. */
export const DEFAULT_MAX_SESSIONS = 10_000;
/** How often a target name is looked up again (through the resolver's cache). */
export const DEFAULT_RESOLVE_INTERVAL_MS = 10_000;
/**
 * Datagrams one batch holds (slots of udp.buffer_size each in the arena; only the pages datagrams
 * land in become resident). More than a turn of the event loop brings under load.
 */
const BATCH_SLOTS = 128;
/**
 * The most a datagram can carry, rounded up to 64 KiB (65,527 bytes over IPv6, 65,507 over IPv4):
 * a slot this large never truncates one, and it is the addon's largest slot.
 */
const MAX_DATAGRAM_BYTES = 64 * 1024;

/** Which way a datagram moves: 'sent' = client → target, 'received' = target → client. */
export type UdpDirection = 'sent' | 'received';

/** Why the relay itself dropped a datagram. */
export type UdpDropReason = 'session_limit' | 'oversize_datagram' | 'session_create' | 'no_target';

/** The caller's choices for a new session (see the header). */
export interface UdpSessionPlan {
  /** Where the session's upstream socket connects; null: the relay's own target. */
  readonly target: { readonly ip: string; readonly port: number; readonly family: 4 | 6 } | null;
  /** Prepended to every datagram the session sends to the target; null: nothing. */
  readonly header: Buffer | null;
}

/** What `admit` answers; the policy's Verdict (a Ticket or a Refusal) is one. */
export interface UdpAdmission {
  readonly allow: boolean;
}

export interface UdpRelayHooks<A extends UdpAdmission = UdpAdmission> {
  /**
   * A datagram from `clientIp` (IPv4-mapped addresses given as IPv4) would open a new session.
   * `allow: false` drops it and opens nothing. Asked again for each datagram of a refused client.
   */
  readonly admit?: (clientIp: string, clientPort: number) => A;
  /** Per datagram, both ways, before forwarding; see the header for the answers. */
  readonly meter?: (admission: A, bytes: number, direction: UdpDirection, clientPort: number) => number;
  /** The session of an admitted client ended (or could not be opened after all). */
  readonly release?: (admission: A) => void;
  /** An open, update or close event that passed the logging thresholds. */
  readonly onEvent?: (event: ConnectionEvent) => void;
  /** A datagram the relay dropped (the caller aggregates these for its logs). */
  readonly onDrop?: (reason: UdpDropReason, clientIp: string, clientPort: number, direction: UdpDirection) => void;
  /** An error counted in stats; `clientIp` is undefined when no client is concerned. */
  readonly onError?: (type: ErrorType, error: Error, clientIp: string | undefined, clientPort: number) => void;
  /**
   * Asked after `admit` and the session cap for a new session; undefined drops the datagram
   * (reported through onDrop as 'no_target', for the hook to count).
   */
  readonly plan?: (clientIp: string, clientPort: number) => UdpSessionPlan | undefined;
  /** A planned session ended; gets back the plan object `plan` returned. */
  readonly planEnded?: (plan: UdpSessionPlan) => void;
}

export interface UdpRelayOptions<A extends UdpAdmission = UdpAdmission> {
  /** For the events' listener_name. */
  readonly listenerName: string;
  /** The bound listening socket; the caller keeps owning it. */
  readonly socket: dgram.Socket;
  /** null: every session's target comes from the `plan` hook. */
  readonly target: Endpoint | null;
  readonly udp: UdpSettings;
  readonly stats: ListenerStats;
  /** The listener's max_total_connections when set (> 0); DEFAULT_MAX_SESSIONS otherwise. */
  readonly maxSessions?: number;
  readonly hooks?: UdpRelayHooks<A>;
  /** Defaults to the process-wide cache. */
  readonly resolver?: TargetResolver;
  readonly resolveIntervalMs?: number;
  /** Monotonic milliseconds; defaults to performance.now(). */
  readonly clock?: () => number;
  /** Overrides the sweep period derived from the timeouts (tests). */
  readonly sweepIntervalMs?: number;
  /**
   * true: the batched path (start() rejects if the addon is not there); false: Node's path;
   * undefined (production): batched where the addon is built, Node's otherwise.
   */
  readonly batched?: boolean;
}

const ALLOWED: UdpAdmission = Object.freeze({ allow: true });
const { ECONNREFUSED } = osConstants.errno;
const MAPPED_PREFIX = '::ffff:';
const MIN_SWEEP_MS = 10;
const MAX_SWEEP_MS = 1_000;

export class UdpRelay<A extends UdpAdmission = UdpAdmission> {
  readonly #name: string;
  readonly #socket: dgram.Socket;
  /** null: targets come from the plan hook. */
  readonly #targetHost: string | null;
  readonly #targetPort: number;
  readonly #stats: ListenerStats;
  readonly #table = new SessionTable<A>();
  readonly #maxSessions: number;
  readonly #bufferSize: number;
  readonly #timeout: number;
  readonly #logging: UdpLoggingSettings;
  /** periodic_log_bytes, Infinity when off, so the hot path's countdown never reaches it. */
  readonly #logBytes: number;
  readonly #logInterval: number;
  readonly #sweepMs: number;
  readonly #resolveMs: number;
  readonly #resolver: TargetResolver;
  readonly #clock: () => number;
  readonly #admit: ((clientIp: string, clientPort: number) => A) | undefined;
  readonly #meter: ((admission: A, bytes: number, direction: UdpDirection, clientPort: number) => number) | undefined;
  readonly #release: ((admission: A) => void) | undefined;
  readonly #onEvent: ((event: ConnectionEvent) => void) | undefined;
  readonly #onDrop: UdpRelayHooks<A>['onDrop'];
  readonly #onError: UdpRelayHooks<A>['onError'];
  readonly #plan: UdpRelayHooks<A>['plan'];
  readonly #planEnded: UdpRelayHooks<A>['planEnded'];

  readonly #batched: boolean | undefined;
  #targetIp = '';
  #targetFamily: 4 | 6 = 4;
  /** The batched path's reader and writer; null: Node's path. */
  #batch: DatagramBatch | null = null;
  /** The listening socket's id in the batch. */
  #listenerId = -1;
  #listenerFamily: 4 | 6 = 4;
  /** Sessions by their upstream socket's batch id. */
  readonly #byId: (UdpSession<A> | undefined)[] = [];
  /** Ids of ended sessions, freed for reuse after the next batch (which may still name them). */
  #retiredIds: number[] = [];
  /** The entry being handled, for #entryAddress. */
  #entry = 0;
  /** Replies to clients, on the listening socket's handle; null: socket.send(). */
  #clientSender: DatagramSender | null = null;
  /** Puts dgram's own 'message' delivery back on the listening socket; null: we listen to it. */
  #undoIntercept: (() => void) | null = null;
  #started = false;
  #closed = false;
  /** False after stopReceiving(): no new session is opened. */
  #accepting = true;
  #sweepTimer: NodeJS.Timeout | null = null;
  #resolveTimer: NodeJS.Timeout | null = null;
  #closing: Promise<void> | null = null;

  constructor(options: UdpRelayOptions<A>) {
    const { udp } = options;
    this.#name = options.listenerName;
    this.#socket = options.socket;
    // An empty host means "this machine", as when dialing ":port".
    const target = options.target;
    this.#targetHost = target === null ? null : target.host === '' ? '127.0.0.1' : target.host;
    this.#targetPort = target === null ? 0 : target.port;
    this.#stats = options.stats;
    this.#maxSessions = options.maxSessions !== undefined && options.maxSessions > 0
      ? options.maxSessions
      : DEFAULT_MAX_SESSIONS;
    // Past the largest possible datagram a larger size changes nothing but the batch arena's size.
    this.#bufferSize = Math.min(udp.buffer_size, MAX_DATAGRAM_BYTES);
    this.#timeout = udp.session_timeout > 0 ? udp.session_timeout : Infinity;
    this.#logging = udp.logging;
    this.#logBytes = udp.logging.periodic_log_bytes > 0 ? udp.logging.periodic_log_bytes : Infinity;
    this.#logInterval = udp.logging.periodic_log_interval > 0 ? udp.logging.periodic_log_interval : Infinity;
    const shortest = Math.min(this.#timeout, this.#logInterval);
    this.#sweepMs = options.sweepIntervalMs ??
      (shortest === Infinity ? MAX_SWEEP_MS : Math.min(MAX_SWEEP_MS, Math.max(MIN_SWEEP_MS, shortest / 8)));
    this.#resolveMs = options.resolveIntervalMs ?? DEFAULT_RESOLVE_INTERVAL_MS;
    this.#resolver = options.resolver ?? defaultResolver;
    this.#clock = options.clock ?? (() => performance.now());
    const hooks = options.hooks ?? {};
    this.#admit = hooks.admit;
    this.#meter = hooks.meter;
    this.#release = hooks.release;
    this.#onEvent = hooks.onEvent;
    this.#onDrop = hooks.onDrop;
    this.#onError = hooks.onError;
    this.#plan = hooks.plan;
    this.#planEnded = hooks.planEnded;
    this.#batched = options.batched;
  }

  /** Whether datagrams go through the batched path (udp-batch.ts); known after start(). */
  get batched(): boolean {
    return this.#batch !== null;
  }

  /** Open sessions. */
  get sessionCount(): number {
    return this.#table.size;
  }

  /** The address new sessions connect to ('' before start()). */
  get targetAddress(): string {
    return this.#targetIp;
  }

  /** Resolves the target, then relays until close(). */
  async start(): Promise<void> {
    if (this.#started) throw new Error('UdpRelay.start() called twice');
    this.#started = true;
    try {
      if (this.#targetHost !== null) await this.#resolveTarget();
    } catch (err) {
      this.#error('target_resolve', err, undefined, 0);
      throw err;
    }
    if (this.#closed) return;
    if (this.#batched !== false) this.#startBatch();
    if (this.#batch === null) {
      this.#clientSender = datagramSender(this.#socket);
      this.#undoIntercept = interceptDatagrams(this.#socket, this.#onClientMessage);
      if (this.#undoIntercept === null) this.#socket.on('message', this.#onClientMessage);
    }
    this.#socket.on('error', this.#onSocketError);
    this.#socket.on('close', this.#onSocketClose);
    this.#sweepTimer = setInterval(this.#sweep, this.#sweepMs);
    this.#sweepTimer.unref();
    if (this.#targetHost !== null && isIP(this.#targetHost) === 0) {
      this.#resolveTimer = setInterval(this.#refreshTarget, this.#resolveMs);
      this.#resolveTimer.unref();
    }
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
    if (this.#batch !== null) {
      this.#batch.pause(this.#listenerId);
      return true;
    }
    return pauseReading(this.#socket);
  }

  /**
   * Shutdown: every session ends now (close events subject to the thresholds), timers stop, the
   * relay's listeners leave the socket. Resolves when every upstream socket (and, with
   * `closeSocket`, the listening socket) has closed. Idempotent.
   */
  close(options: { readonly closeSocket?: boolean } = {}): Promise<void> {
    if (this.#closing !== null) return this.#closing;
    this.#closed = true;
    if (this.#sweepTimer !== null) clearInterval(this.#sweepTimer);
    if (this.#resolveTimer !== null) clearInterval(this.#resolveTimer);
    this.#sweepTimer = this.#resolveTimer = null;
    const socket = this.#socket;
    this.#undoIntercept?.();
    this.#undoIntercept = null;
    socket.off('message', this.#onClientMessage);
    socket.off('error', this.#onSocketError);
    socket.off('close', this.#onSocketClose);
    const pending: Promise<void>[] = [];
    const now = this.#clock();
    for (const session of this.#table.values()) {
      pending.push(new Promise((resolve) => session.upstream.once('close', resolve)));
      this.#end(session, now);
    }
    this.#batch?.close();
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
    for (const session of this.#table.values()) {
      if (session.plan !== null && test(session.plan as UdpSessionPlan)) this.#end(session, now);
    }
  }

  // ---- hot path -------------------------------------------------------------------------------

  /** Client → target, once the session is known: meter and count. False: drop it. */
  #passFromClient(session: UdpSession<A>, bytes: number): boolean {
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
    if ((session.logBytesLeft -= bytes) <= 0) this.#update(session, this.#clock());
    return true;
  }

  /** Target → client: meter and count. False: drop it. */
  #passFromTarget(session: UdpSession<A>, bytes: number): boolean {
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
    if ((session.logBytesLeft -= bytes) <= 0) this.#update(session, this.#clock());
    return true;
  }

  // Node's path: a call per datagram.

  readonly #onClientMessage = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
    const bytes = msg.length;
    if (bytes > this.#bufferSize) {
      this.#oversize(rinfo.address, rinfo.port, 'sent');
      return;
    }
    let session = this.#table.get(rinfo.address, rinfo.port);
    if (session === undefined) {
      session = this.#open(rinfo.address, rinfo.port);
      if (session === undefined) return;
    }
    if (!this.#passFromClient(session, bytes)) return;
    const header = session.header;
    const sender = session.sender;
    if (sender !== null) sender.send(msg, header);
    else if (header === null) session.upstream.send(msg);
    else session.upstream.send([header, msg]);
  };

  #onTargetMessage(session: UdpSession<A>, msg: Buffer): void {
    const bytes = msg.length;
    if (bytes > this.#bufferSize) {
      this.#oversize(session.clientAddress, session.clientPort, 'received');
      return;
    }
    if (!this.#passFromTarget(session, bytes)) return;
    const sender = this.#clientSender;
    if (sender !== null) sender.sendTo(msg, session.clientPort, session.clientAddress);
    else this.#socket.send(msg, session.clientPort, session.clientAddress);
  }

  // The batched path: a call per batch (udp-batch.ts).

  readonly #onBatch = (count: number): void => {
    const batch = this.#batch;
    if (batch === null) return;
    const recv = batch.recv;
    const listenerId = this.#listenerId;
    for (let e = 0, end = count * RECV_STRIDE; e < end; e += RECV_STRIDE) {
      const id = recv[e + R_ID]!;
      const length = recv[e + R_LENGTH]!;
      if (id === listenerId) {
        if (length >= 0) this.#batchFromClient(batch, recv, e, length);
        else this.#error('client_read', socketError(length, 'recvmsg'), undefined, 0);
        continue;
      }
      const session = this.#byId[id];
      if (session === undefined) continue; // ended since the datagram was read
      if (length < 0) {
        this.#onUpstreamError(session, socketError(length, 'recvmsg'));
      } else if (recv[e + R_TRUNCATED] !== 0) {
        this.#oversize(session.clientAddress, session.clientPort, 'received');
      } else if (this.#passFromTarget(session, length)) {
        batch.queueTo(listenerId, recv[e + R_OFFSET]!, length, session.clientPort, session.w0, session.w1, session.w2, session.w3, session.scope);
      }
    }
    if (batch.flush() > 0) batch.failures(this.#onSendFailure);
    if (this.#retiredIds.length > 0) {
      for (const id of this.#retiredIds) batch.release(id);
      this.#retiredIds = [];
    }
  };

  #batchFromClient(batch: DatagramBatch, recv: Int32Array, e: number, length: number): void {
    const port = recv[e + R_PORT]!;
    this.#entry = e;
    if (recv[e + R_TRUNCATED] !== 0) {
      this.#oversize(this.#entryAddress(), port, 'sent');
      return;
    }
    const a = e + R_ADDR;
    let session = this.#table.getByWords(port, recv[a]!, recv[a + 1]!, recv[a + 2]!, recv[a + 3]!, this.#entryAddress);
    if (session === undefined) {
      session = this.#open(this.#entryAddress(), port);
      if (session === undefined) return;
    }
    if (this.#passFromClient(session, length)) batch.queue(session.batchId, recv[e + R_OFFSET]!, length);
  }

  /** The source address of the batch entry being handled (new sessions and logs only). */
  readonly #entryAddress = (): string => addressOf(this.#batch!.recv, this.#entry, this.#listenerFamily);

  /** A datagram the kernel refused in a flush: as on Node's path, only a refused target counts. */
  readonly #onSendFailure = (id: number, errno: number): void => {
    const session = this.#byId[id];
    if (session !== undefined && errno === ECONNREFUSED) this.#onUpstreamError(session, socketError(-errno, 'send'));
  };

  /** Moves the listening socket to the batched path if the addon is there; see `batched`. */
  #startBatch(): void {
    const native = loadUdpBatch();
    if (native === null) {
      if (this.#batched === true) throw new Error(`UdpRelay: the batched path is not available: ${udpBatchUnavailableReason()}`);
      return;
    }
    const batch = new DatagramBatch(native, this.#bufferSize, BATCH_SLOTS, this.#onBatch);
    const fd = takeOverReading(this.#socket, () => batch.unwatch(this.#listenerId));
    const id = fd === null ? -1 : batch.watch(fd);
    if (id < 0) {
      if (fd !== null) resumeReading(this.#socket);
      batch.close();
      if (this.#batched === true) throw new Error(`UdpRelay: the batched path could not take the socket (${id})`);
      return;
    }
    this.#batch = batch;
    this.#listenerId = id;
    this.#listenerFamily = this.#socket.address().family === 'IPv6' ? 6 : 4;
  }

  // ---- sessions -------------------------------------------------------------------------------

  #open(address: string, port: number): UdpSession<A> | undefined {
    if (!this.#accepting) return undefined;
    const clientIp = clientIpOf(address);
    // Without an admit hook every client is allowed; the constant then stands in for A, which
    // the meter and release hooks (the only readers) cannot tell apart from an allowing verdict.
    let admission = ALLOWED as A;
    if (this.#admit !== undefined) {
      admission = this.#admit(clientIp, port);
      if (!admission.allow) return undefined;
    }
    if (this.#table.size >= this.#maxSessions) {
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
    const targetIp = to === null ? this.#targetIp : to.ip;
    const targetPort = to === null ? this.#targetPort : to.port;
    const upstream = this.#connectUpstream(clientIp, port, targetIp, targetPort, to === null ? this.#targetFamily : to.family);
    const batchId = upstream === null ? null : this.#watchUpstream(upstream, clientIp, port);
    if (upstream === null || batchId === null) {
      if (plan !== undefined) this.#planEnded?.(plan);
      this.#release?.(admission);
      this.#onDrop?.('session_create', clientIp, port, 'sent');
      return undefined;
    }
    const now = this.#clock();
    const session = new UdpSession<A>(
      address, port, clientIp, targetIp, targetPort, admission, upstream, now, this.#logBytes,
    );
    if (plan !== undefined) {
      session.plan = plan;
      session.header = plan.header;
    }
    upstream.on('error', (err: Error) => this.#onUpstreamError(session, err));
    if (batchId >= 0) {
      this.#attachToBatch(this.#batch!, session, batchId);
    } else {
      // One closure pair per session, none per datagram.
      const onReply = (msg: Buffer): void => this.#onTargetMessage(session, msg);
      if (interceptDatagrams(upstream, onReply) === null) upstream.on('message', onReply);
      session.sender = datagramSender(upstream);
    }
    this.#table.add(session);
    this.#stats.accepted++;
    this.#stats.active++;
    if (this.#logging.log_session_start) this.#emit('open', session, now);
    return session;
  }

  /**
   * On the batched path, hands the new upstream socket's reading to the batch: its id there, or
   * null if the batch could not take it (counted as 'session_create'; the socket is closed).
   * -1 on Node's path.
   */
  #watchUpstream(upstream: dgram.Socket, clientIp: string, clientPort: number): number | null {
    const batch = this.#batch;
    if (batch === null) return -1;
    const fd = takeOverReading(upstream, null);
    const id = fd === null ? -1 : batch.watch(fd);
    if (id >= 0) return id;
    closeQuietly(upstream);
    this.#error('session_create', fd === null ? new Error('the upstream socket has no descriptor') : socketError(id, 'epoll_ctl'), clientIp, clientPort);
    return null;
  }

  /** The session's side of #watchUpstream: its id, its PROXY header, the address replies go to. */
  #attachToBatch(batch: DatagramBatch, session: UdpSession<A>, id: number): void {
    session.batchId = id;
    this.#byId[id] = session;
    if (session.header !== null) batch.setHeader(id, session.header);
    // The words the batch reported the client's datagram with: replies go to them.
    const a = this.#entry + R_ADDR;
    const recv = batch.recv;
    session.w0 = recv[a]!;
    session.w1 = recv[a + 1]!;
    session.w2 = recv[a + 2]!;
    session.w3 = recv[a + 3]!;
    session.scope = recv[this.#entry + R_SCOPE]!;
  }

  /** A socket connected to the target, or null (counted as 'session_create'). */
  #connectUpstream(clientIp: string, clientPort: number, targetIp: string, targetPort: number, family: 4 | 6): dgram.Socket | null {
    let upstream: dgram.Socket | null = null;
    try {
      upstream = dgram.createSocket({ type: family === 6 ? 'udp6' : 'udp4', lookup: literalLookup });
      // With a lookup that answers at once, bind and connect complete inside this call, so the
      // session can send its first datagram right away instead of queueing it. A failure (EMFILE
      // at bind, say) is emitted as 'error' with no listener yet, which throws here.
      upstream.connect(targetPort, targetIp);
      upstream.remoteAddress(); // throws if the connect did not complete at once
      return upstream;
    } catch (err) {
      if (upstream !== null) closeQuietly(upstream);
      this.#error('session_create', err, clientIp, clientPort);
      return null;
    }
  }

  #onUpstreamError(session: UdpSession<A>, err: Error): void {
    const syscall = (err as NodeJS.ErrnoException).syscall;
    const type: ErrorType = syscall === 'send' ? 'target_write' : 'target_read';
    session.lastError = describeError(err);
    this.#error(type, err, session.clientIp, session.clientPort);
  }

  /** Ends a session: table, socket, counters, release, close event. */
  #end(session: UdpSession<A>, now: number): void {
    if (!session.open) return;
    session.open = false;
    this.#table.delete(session);
    if (session.batchId >= 0) {
      this.#batch?.unwatch(session.batchId);
      this.#byId[session.batchId] = undefined;
      this.#retiredIds.push(session.batchId);
    }
    closeQuietly(session.upstream);
    const stats = this.#stats;
    stats.active--;
    stats.observeDuration((now - session.startedAt) / 1000);
    if (session.plan !== null) this.#planEnded?.(session.plan as UdpSessionPlan);
    this.#release?.(session.admission);
    if (this.#logging.log_session_close && this.#worthLogging(session, now)) this.#emit('close', session, now);
  }

  /** A periodic trigger fired: restart both triggers, and send an update if it is worth one. */
  #update(session: UdpSession<A>, now: number): void {
    session.loggedAt = now;
    session.logBytesLeft = this.#logBytes;
    if (this.#worthLogging(session, now)) this.#emit('update', session, now);
  }

  #worthLogging(session: UdpSession<A>, now: number): boolean {
    return now - session.startedAt >= this.#logging.min_log_duration && session.bytes >= this.#logging.min_log_bytes;
  }

  readonly #sweep = (): void => {
    const now = this.#clock();
    for (const session of this.#table.values()) {
      const packets = session.packets;
      if (packets !== session.packetsAtSweep) {
        session.packetsAtSweep = packets;
        session.activeAt = now;
      } else if (now - session.activeAt >= this.#timeout) {
        this.#end(session, now);
        continue;
      }
      if (now - session.loggedAt >= this.#logInterval) this.#update(session, now);
    }
  };

  #emit(type: ConnectionEventType, session: UdpSession<A>, now: number): void {
    const onEvent = this.#onEvent;
    if (onEvent === undefined) return;
    const event: { -readonly [K in keyof ConnectionEvent]: ConnectionEvent[K] } = {
      kind: 'connection',
      event_type: type,
      timestamp: Date.now(),
      listener_name: this.#name,
      protocol: 'udp',
      source_ip: session.clientIp,
      source_port: session.clientPort,
      target_ip: session.targetIp,
      target_port: session.targetPort,
      bytes_sent: session.bytesSent,
      bytes_received: session.bytesReceived,
      packets_sent: session.packetsSent,
      packets_received: session.packetsReceived,
      duration_ms: Math.round(now - session.startedAt),
    };
    if (type !== 'open' && session.lastError !== null) event.error = session.lastError;
    onEvent(event);
  }

  // ---- errors and drops -----------------------------------------------------------------------

  #oversize(address: string, port: number, direction: UdpDirection): void {
    this.#stats.error('oversize_datagram');
    this.#onDrop?.('oversize_datagram', clientIpOf(address), port, direction);
  }

  #error(type: ErrorType, err: unknown, clientIp: string | undefined, clientPort: number): void {
    this.#stats.error(type);
    this.#onError?.(type, err instanceof Error ? err : new Error(String(err)), clientIp, clientPort);
  }

  readonly #onSocketError = (err: Error): void => {
    this.#error('client_read', err, undefined, 0);
  };

  readonly #onSocketClose = (): void => {
    void this.close();
  };

  // ---- target address -------------------------------------------------------------------------

  async #resolveTarget(): Promise<void> {
    const host = this.#targetHost;
    if (host === null) return;
    const family = isIP(host);
    if (family !== 0) {
      this.#targetIp = host;
      this.#targetFamily = family === 6 ? 6 : 4;
      return;
    }
    const addresses = await this.#resolver.resolve(host);
    // UDP gives no sign that an address is dead, so there is no falling back to the next one;
    // the first, in the system's preference order, is used.
    const first = addresses[0]!;
    this.#targetIp = first.address;
    this.#targetFamily = first.family;
  }

  /** Timer: new sessions pick up a changed address; existing ones keep theirs. */
  readonly #refreshTarget = (): void => {
    this.#resolveTarget().catch((err: unknown) => {
      if (!this.#closed) this.#error('target_resolve', err, undefined, 0);
    });
  };
}

/** The address for logs and policy: `::ffff:a.b.c.d` (an IPv4 client of a dual-stack socket) as IPv4. */
function clientIpOf(address: string): string {
  return address.startsWith(MAPPED_PREFIX) && address.indexOf('.', MAPPED_PREFIX.length) !== -1
    ? address.slice(MAPPED_PREFIX.length)
    : address;
}

/**
 * Upstream sockets are only ever bound and connected to IP literals (the resolver already turned a
 * name into one), so the lookup is the identity and answers synchronously.
 */
function literalLookup(
  hostname: string,
  _options: unknown,
  callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  callback(null, hostname, isIP(hostname));
}

function closeQuietly(socket: dgram.Socket): void {
  try {
    socket.close();
  } catch {
    // Already closed: nothing left to release.
  }
}

function describeError(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED') return 'ECONNREFUSED: target port unreachable';
  return code !== undefined ? `${code}: ${err.message}` : err.message;
}
