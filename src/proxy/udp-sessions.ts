/**
 * UDP sessions of one listener: the per-client record and the table that finds it per datagram.
 *
 * The table is keyed by (address, port) without building a key string per datagram: the address
 * strings a socket hands out are fresh and unhashed every time, so a `${address}:${port}` key
 * (concatenate, flatten, hash) costs far more per lookup than a Map keyed by the port number
 * followed by one string comparison (the figures: docs/performance.md, "Measurements behind the
 * code"). So the port comes first: `#byPort` maps a port to the first session seen
 * with it, and the rare other sessions that share that port (clients behind different addresses
 * that picked the same source port, or NTP-style fixed source ports) live in a per-port Map keyed by
 * address, so even thousands of clients on one port stay O(1).
 *
 * Session logging (udp.logging), filtered here so suppressed events never leave the relay
 * (SessionLog):
 * - open: when the session is created, if log_session_start. It cannot know how long or big the
 *   session will be, so min_log_duration and min_log_bytes do not apply to it.
 * - update: once periodic_log_interval has passed or periodic_log_bytes (both directions) moved
 *   since the session started or since the last update trigger, whichever comes first; 0 turns a
 *   trigger off. Sent only if the session is by then at least min_log_duration old and has moved at
 *   least min_log_bytes; a trigger that fires too early is consumed all the same, and the next one
 *   counts from it. The interval is checked at sweep resolution, the bytes exactly (the relay counts
 *   them down per datagram and calls update() when they run out).
 * - close: when the session ends (idle timeout, close()), if log_session_close and the session
 *   lasted at least min_log_duration and moved at least min_log_bytes.
 *
 * Idle timeout (udp.session_timeout): no datagram forwarded in either direction for that long ends
 * the session. Dropped datagrams are no activity. One interval timer per relay (IdleSweep) sweeps
 * the table every eighth of the shortest of session_timeout and periodic_log_interval (10 ms to
 * 1 s); the hot path only bumps packet counters, and the sweep compares them with what it saw last
 * time. A session thus ends between 1× session_timeout and that plus one sweep period after its
 * last datagram, never early.
 */
import type dgram from 'node:dgram';
import type { UdpLoggingSettings } from '../config/types.js';
import type { DatagramSender } from '../platform/index.js';
import type { ConnectionEvent, ConnectionEventType } from '../telemetry/events.js';

export class UdpSession<A = unknown> {
  /** The client's address as the listening socket reports it (replies go there). */
  readonly clientAddress: string;
  readonly clientPort: number;
  /** The address for logs and policy: IPv4 for an IPv4-mapped client of a dual-stack socket. */
  readonly clientIp: string;
  /** The address the upstream socket is connected to (a resolved name's address). */
  readonly targetIp: string;
  readonly targetPort: number;
  /** What the admit hook answered; handed back to the meter and to release. */
  readonly admission: A;
  /** Monotonic ms at creation. */
  readonly startedAt: number;
  /** Connected to the target; its listeners are the relay's. */
  readonly upstream: dgram.Socket;

  /** Client → target. */
  bytesSent = 0;
  packetsSent = 0;
  /** Target → client. */
  bytesReceived = 0;
  packetsReceived = 0;

  /** Packets (both ways) the last sweep saw: a change means activity since that sweep. */
  packetsAtSweep = 0;
  /** Monotonic ms of the sweep that last saw activity (or creation). */
  activeAt: number;
  /** Monotonic ms of the last open/update trigger, for periodic_log_interval. */
  loggedAt: number;
  /** Bytes (both ways) still to move before periodic_log_bytes triggers an update. */
  logBytesLeft: number;
  /** The last error the upstream socket reported, for the close event; cleared by a reply. */
  lastError: string | null = null;
  open = true;
  /** What the relay's `plan` hook chose for this session (null: no hook). */
  plan: object | null = null;
  /** Prepended to every datagram sent to the target (a PROXY protocol v2 header); null: nothing. */
  header: Buffer | null = null;
  /** Sends on the upstream socket's handle (src/platform/dgram-internals.ts); null: upstream.send(). */
  sender: DatagramSender | null = null;
  /** The upstream socket's id in the relay's DatagramBatch (udp-batch.ts); -1: Node's path. */
  batchId = -1;
  /** The client's address as the batch reports it (four words of the IPv6 form) and scope id. */
  w0 = 0;
  w1 = 0;
  w2 = 0;
  w3 = 0;
  scope = 0;

  constructor(
    clientAddress: string,
    clientPort: number,
    clientIp: string,
    targetIp: string,
    targetPort: number,
    admission: A,
    upstream: dgram.Socket,
    now: number,
    logBytes: number,
  ) {
    this.clientAddress = clientAddress;
    this.clientPort = clientPort;
    this.clientIp = clientIp;
    this.targetIp = targetIp;
    this.targetPort = targetPort;
    this.admission = admission;
    this.upstream = upstream;
    this.startedAt = now;
    this.activeAt = now;
    this.loggedAt = now;
    this.logBytesLeft = logBytes;
  }

  get bytes(): number {
    return this.bytesSent + this.bytesReceived;
  }

  get packets(): number {
    return this.packetsSent + this.packetsReceived;
  }
}

export class SessionTable<A = unknown> {
  readonly #byPort = new Map<number, UdpSession<A>>();
  /** Sessions whose port is already the key of a different address's session in #byPort. */
  readonly #shared = new Map<number, Map<string, UdpSession<A>>>();
  /** Every session, for the sweep and shutdown; Set iteration tolerates deletion. */
  readonly #all = new Set<UdpSession<A>>();

  get size(): number {
    return this.#all.size;
  }

  get(address: string, port: number): UdpSession<A> | undefined {
    const first = this.#byPort.get(port);
    if (first === undefined || first.clientAddress === address) return first;
    const shared = this.#shared.get(port);
    return shared === undefined ? undefined : shared.get(address);
  }

  /**
   * The batch path's lookup, by the address's words (udp-batch.ts) instead of its string; the
   * string is only made (by `addressOf`) in the rare case that the port's first session is another
   * client's.
   */
  getByWords(port: number, w0: number, w1: number, w2: number, w3: number, addressOf: () => string): UdpSession<A> | undefined {
    const first = this.#byPort.get(port);
    if (first === undefined || (first.w3 === w3 && first.w2 === w2 && first.w1 === w1 && first.w0 === w0)) return first;
    const shared = this.#shared.get(port);
    return shared === undefined ? undefined : shared.get(addressOf());
  }

  /** The caller has checked that no session exists for the session's address and port. */
  add(session: UdpSession<A>): void {
    this.#all.add(session);
    const port = session.clientPort;
    if (!this.#byPort.has(port)) {
      this.#byPort.set(port, session);
      return;
    }
    let shared = this.#shared.get(port);
    if (shared === undefined) {
      shared = new Map();
      this.#shared.set(port, shared);
    }
    shared.set(session.clientAddress, session);
  }

  delete(session: UdpSession<A>): void {
    if (!this.#all.delete(session)) return;
    const port = session.clientPort;
    const shared = this.#shared.get(port);
    if (this.#byPort.get(port) === session) {
      if (shared === undefined) {
        this.#byPort.delete(port);
        return;
      }
      // Promote one of the port's other sessions to first place.
      const next = shared.values().next().value as UdpSession<A>;
      this.#byPort.set(port, next);
      shared.delete(next.clientAddress);
    } else if (shared !== undefined) {
      shared.delete(session.clientAddress);
    }
    if (shared !== undefined && shared.size === 0) this.#shared.delete(port);
  }

  values(): IterableIterator<UdpSession<A>> {
    return this.#all.values();
  }
}

/** Filters and builds a relay's session events (see the header). */
export class SessionLog<A = unknown> {
  readonly #name: string;
  readonly #logging: UdpLoggingSettings;
  readonly #onEvent: ((event: ConnectionEvent) => void) | undefined;
  /** periodic_log_bytes, Infinity when off, so the hot path's countdown never reaches it. */
  readonly bytes: number;
  /** periodic_log_interval, Infinity when off. */
  readonly interval: number;

  constructor(listenerName: string, logging: UdpLoggingSettings, onEvent: ((event: ConnectionEvent) => void) | undefined) {
    this.#name = listenerName;
    this.#logging = logging;
    this.#onEvent = onEvent;
    this.bytes = logging.periodic_log_bytes > 0 ? logging.periodic_log_bytes : Infinity;
    this.interval = logging.periodic_log_interval > 0 ? logging.periodic_log_interval : Infinity;
  }

  opened(session: UdpSession<A>, now: number): void {
    if (this.#logging.log_session_start) this.#emit('open', session, now);
  }

  /** A periodic trigger fired: restart both triggers, and send an update if it is worth one. */
  update(session: UdpSession<A>, now: number): void {
    session.loggedAt = now;
    session.logBytesLeft = this.bytes;
    if (this.#worthLogging(session, now)) this.#emit('update', session, now);
  }

  closed(session: UdpSession<A>, now: number): void {
    if (this.#logging.log_session_close && this.#worthLogging(session, now)) this.#emit('close', session, now);
  }

  #worthLogging(session: UdpSession<A>, now: number): boolean {
    return now - session.startedAt >= this.#logging.min_log_duration && session.bytes >= this.#logging.min_log_bytes;
  }

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
}

const MIN_SWEEP_MS = 10;
const MAX_SWEEP_MS = 1_000;

/** The sweep's period for a session timeout and a log interval (Infinity: off); see the header. */
export function sweepPeriod(timeoutMs: number, logIntervalMs: number): number {
  const shortest = Math.min(timeoutMs, logIntervalMs);
  return shortest === Infinity ? MAX_SWEEP_MS : Math.min(MAX_SWEEP_MS, Math.max(MIN_SWEEP_MS, shortest / 8));
}

/** The timer that ends idle sessions and fires periodic_log_interval updates (see the header). */
export class IdleSweep<A = unknown> {
  readonly #table: SessionTable<A>;
  readonly #log: SessionLog<A>;
  /** udp.session_timeout, Infinity when off. */
  readonly #timeout: number;
  readonly #periodMs: number;
  readonly #clock: () => number;
  /** Ends an idle session (the relay's job: sockets, counters, hooks, close event). */
  readonly #end: (session: UdpSession<A>, now: number) => void;
  #timer: NodeJS.Timeout | null = null;

  constructor(
    table: SessionTable<A>,
    log: SessionLog<A>,
    timeoutMs: number,
    periodMs: number,
    clock: () => number,
    end: (session: UdpSession<A>, now: number) => void,
  ) {
    this.#table = table;
    this.#log = log;
    this.#timeout = timeoutMs;
    this.#periodMs = periodMs;
    this.#clock = clock;
    this.#end = end;
  }

  start(): void {
    this.#timer = setInterval(this.#sweep, this.#periodMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
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
      if (now - session.loggedAt >= this.#log.interval) this.#log.update(session, now);
    }
  };
}
