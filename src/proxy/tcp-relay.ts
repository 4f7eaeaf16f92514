/**
 * The TCP relay of one client connection: dial the target, move bytes both ways with backpressure,
 * pass half-closes on, enforce the inactivity timeouts, count, and tell the caller when it opened
 * and when it closed. It knows sockets only: no IPC, no log sinks, no rate-limit policy (the policy
 * comes in as the `meter` function).
 *
 * Caller's side of the contract
 * - Hand over the accepted connection as a TcpEnd (tcpEnds().accept: tcp-path.ts), not reading,
 *   with whatever was already read from it (after a PROXY header) as `early`; the relay owns it
 *   from then on, and forwards `early` first.
 * - Keep the returned handle (e.g. in a Set) and drop it in `onClose`, which is called exactly
 *   once, asynchronously, after both sockets are closed and every timer is cleared. `destroy()` is
 *   how to end a connection at shutdown.
 * - The relay counts bytes (`stats.bytesSent`/`bytesReceived`, as they flow) and errors
 *   (`stats.error(type)`). Accepted/active counts and the duration histogram are the caller's: it
 *   knows which connections it accepted (a failed dial is an error, not an accepted connection).
 * - Callbacks and the meter must not throw.
 *
 * Dialing. IP literals are dialed as they are; names go through a TargetResolver (cached, see
 * target-resolver.ts). Each resolved address is tried in order until one accepts; `connect_timeout`
 * bounds the whole dial, resolution included (0 = no bound but the kernel's). With `failover`
 * (several targets), a target that cannot be connected — every address refused, no resolution, or
 * `attemptTimeoutMs` gone by — is given up for the next one `failover` names, within the same
 * `connect_timeout`. `header` (a PROXY protocol header) is written to the target before anything
 * else and is not counted as client bytes. All of this is set-up: the per-chunk path is the same
 * with or without it. Both sockets get TCP_NODELAY (we forward what we read at once; Nagle would
 * only add latency to small requests) and keepalive (60 s by default, so a peer that vanished
 * without a FIN is found; on the target's socket once the connection has lived a second:
 * keepalive-later.ts).
 *
 * Moving bytes. Each direction reads into one static buffer (2 KiB, or 1 MiB while it moves bulk
 * data: read-buffers.ts) and writes that buffer to the other socket. If the write completes at
 * once (the kernel took it all, the usual case), reading goes on; if not, reading that direction
 * stops until the write's callback: at most one buffer per direction is held in user space
 * however slow the peer, and the buffer is never overwritten under a pending write. No closure,
 * no logging, no clock read per chunk; the only allocation per chunk is a view when a read is
 * shorter than the buffer. Both sockets are Node's native TCP handles, not net.Socket streams
 * (src/platform/native-tcp-end.ts says why), except where those are not usable: then net.Socket,
 * behind the same TcpEnd contract (socket-end.ts, chosen once per process by tcp-path.ts).
 *
 * Half-close. A FIN from one side ends the other side's write half (after what was read before it);
 * the other direction keeps flowing. The connection is complete when both directions have ended and
 * both sockets have closed.
 *
 * Abnormal ends reset. An error or reset on either socket, a timeout, a failed dial, the meter's
 * drop and destroy() end both sockets with a TCP RST, not a FIN: a FIN would tell the peer the
 * stream ended normally, and a truncated transfer of a protocol without length framing would look
 * complete. A refused client thus sees "connection reset" at once, as it would from a dead server,
 * and no socket lingers in FIN_WAIT/TIME_WAIT on our side. ECONNRESET, EPIPE and friends are
 * counted and reported, never thrown.
 *
 * The meter's drop resets only once what was relayed has left. A reset throws away the socket's
 * send queue, and what was relayed before the cut was counted against the address's allowance:
 * resetting at once lost up to a megabyte of it (a 1 MB cap delivered 0.37–0.87 MB). So the relay
 * stops reading both sides, waits until both sockets' queues (libuv's and the kernel's, SIOCOUTQ
 * through the addon) are empty, and then resets: the peer has every byte in its own kernel and
 * reads them before it meets the reset. The wait is bounded (DRAIN_DEADLINE_MS): a peer that does
 * not read is reset then, and the bytes it never got are taken off the counts (close event and
 * metrics say what was delivered). Without the addon the kernel's queue cannot be seen: the relay
 * waits for libuv's, then UNSEEN_QUEUE_GRACE_MS, and the close event says delivery is unconfirmed.
 *
 * Timeouts (tcp.*, in ms, 0 = off) are inactivity timeouts, never deadlines from the start, so a
 * connection that keeps moving data is never cut. They run once the target is connected:
 * - idle_timeout: nothing moved for that long — no byte read from either side, no write to either
 *   side progressing. A direction the meter is throttling counts as moving.
 * - read_timeout: nothing read from either side for that long while the relay is waiting for
 *   input. Before any data flowed, that is "the client (and the target) said nothing since the
 *   connection opened"; once data has flowed, "neither side sent anything". Time during which a
 *   direction is blocked on a slow peer or paused by the meter does not count: then the silence is
 *   ours, and write_timeout is the one that applies.
 * - write_timeout: a write to a peer has been pending that long with no progress — the peer's
 *   kernel accepted none of it (libuv's queue did not shrink) and it did not complete. A peer that
 *   reads slowly but steadily is not cut.
 * One coarse timer per connection checks these; the hot path only bumps counters and the timer
 * compares them with its previous look, so activity is seen at the first tick after it. Ticks come
 * every sixteenth of the shortest timeout (at least 10 ms), and the last one before a timeout falls
 * due is moved to the moment it does, so the timer's own period adds no lateness: a timeout fires
 * between 1× and about 1.07× its value after the last activity (one tick to see it), never early.
 */
import type { Endpoint, TcpSettings } from '../config/types.js';
import type { ErrorType, ListenerStats } from '../telemetry/stats.js';
import { Flow, type FlowOwner, type Meter, type RelayDirection } from './relay-flow.js';
import { setKeepAliveLater } from './keepalive-later.js';
import type { TcpEnd } from '../platform/tcp-end.js';
import { tcpEnds } from './tcp-path.js';
import { defaultResolver, ResolveError, type ResolvedAddress, type TargetResolver } from './target-resolver.js';

export { METER_DROP, METER_OK, type Meter, type RelayDirection } from './relay-flow.js';

/** How a relay ended. */
export type CloseCause =
  /** Both directions ended with a FIN and were passed on. */
  | 'complete'
  /** The target could not be resolved or connected; the client was reset. */
  | 'dial_failed'
  /** A socket error or reset on either side. */
  | 'error'
  /** read_timeout, write_timeout or idle_timeout. */
  | 'timeout'
  /** The meter returned METER_DROP. */
  | 'dropped'
  /** destroy() was called. */
  | 'destroyed';

export interface RelayOpenInfo {
  /** The address actually dialed (a resolved name's address). */
  readonly target_ip: string;
  readonly target_port: number;
  readonly family: 4 | 6;
}

export interface RelayCloseInfo {
  readonly cause: CloseCause;
  /** Whether the target connection was established (onOpen was called). */
  readonly opened: boolean;
  /** Client → target. */
  readonly bytes_sent: number;
  /** Target → client. */
  readonly bytes_received: number;
  /** From startTcpRelay() to both sockets closed. */
  readonly duration_ms: number;
  /** '' when no address was dialed (the name did not resolve). */
  readonly target_ip: string;
  readonly target_port: number;
  /** Human reason, for the close event's `error` field; absent for 'complete'. */
  readonly error?: string;
  /** Counted in stats.error() by the relay; absent for 'complete', 'dropped' and 'destroyed'. */
  readonly error_type?: ErrorType;
}

export interface TcpRelayOptions<C = undefined> {
  /** The accepted client connection, not reading. */
  readonly client: TcpEnd;
  /** Bytes already read from the client (after a PROXY header): forwarded first. */
  readonly early?: Buffer[];
  readonly target: Endpoint;
  readonly tcp: TcpSettings;
  readonly stats: ListenerStats;
  /** Anything the caller wants back in its callbacks (addresses, a policy ticket…). */
  readonly context?: C;
  readonly meter?: Meter;
  /**
   * The most the next read of either direction may take, asked after each read (a throttled
   * connection's reads follow its pace: see streamReadLimit in policy/address-state.ts). Absent:
   * reads take what the buffer holds.
   */
  readonly readLimit?: () => number;
  readonly onOpen?: (relay: TcpRelay<C>, info: RelayOpenInfo) => void;
  readonly onClose: (relay: TcpRelay<C>, info: RelayCloseInfo) => void;
  /** Defaults to the process-wide cache. */
  readonly resolver?: TargetResolver;
  /**
   * Several targets: the current target could not be connected, for `reason`. Returns the next
   * target to try, or undefined to give up (the dial fails as usual).
   */
  readonly failover?: (relay: TcpRelay<C>, reason: string) => Endpoint | undefined;
  /** With `failover`: how long one target may take (0 = only connect_timeout bounds it). */
  readonly attemptTimeoutMs?: number;
  /** Written to the target first, once connected (a PROXY protocol header). */
  readonly header?: Buffer;
  /**
   * Reads that fill the small buffer may go on in a 1 MiB one (default), or only in a 64 KiB one:
   * each read is one chunk for the meter (read-buffers.ts).
   */
  readonly bulkReads?: boolean;
  /** TCP keepalive idle time in ms on both sockets; default 60 s; 0 turns keepalive off. */
  readonly keepAliveMs?: number;
  /**
   * The client connection already has TCP_NODELAY and keepalive, inherited from the listening
   * socket (presetAcceptedOptions in src/platform/native-tcp-path.ts).
   */
  readonly clientPreset?: boolean;
}

/** The handle of one relay. */
export interface TcpRelay<C = undefined> {
  readonly client: TcpEnd;
  readonly context: C;
  /** Date.now() when the relay started. */
  readonly startedAt: number;
  /** Client → target bytes so far. */
  readonly bytesSent: number;
  /** Target → client bytes so far. */
  readonly bytesReceived: number;
  /** The address being dialed or connected; '' before resolution. */
  readonly targetIp: string;
  readonly targetPort: number;
  /** Connected to the target and not closing. */
  readonly open: boolean;
  /** Bytes held in user space: the sockets' unwritten data plus data read but not yet forwarded. */
  readonly bufferedBytes: number;
  /** Ends both sockets with a reset (idempotent). onClose follows with cause 'destroyed'. */
  destroy(reason?: string): void;
}

export const DEFAULT_KEEPALIVE_MS = 60_000;
/** The most a connection cut by the meter waits for its queues to drain before it resets. */
export const DRAIN_DEADLINE_MS = 2_000;
/** How often a draining connection looks at its queues. */
const DRAIN_POLL_MS = 5;
/** Without the addon: the wait after libuv's queue drained, for the kernel's (unseen) to follow. */
export const UNSEEN_QUEUE_GRACE_MS = 200;
const MIN_TICK_MS = 10;
/** Inactivity ticks per shortest timeout: how late (1/16 = 6.25 %) activity may be seen. */
const TICKS_PER_TIMEOUT = 16;

/** Starts relaying `options.client` to `options.target`. Never throws for network reasons. */
export function startTcpRelay<C = undefined>(options: TcpRelayOptions<C>): TcpRelay<C> {
  return new Relay<C>(options);
}

function noop(): void {}

class Relay<C> implements TcpRelay<C>, FlowOwner {
  readonly client: TcpEnd;
  readonly context: C;
  readonly startedAt = Date.now();
  readonly stats: ListenerStats;
  readonly meter: Meter | undefined;
  readonly readLimit: (() => number) | undefined;
  target: TcpEnd | null = null;
  targetIp = '';
  targetPort: number;
  connected = false;
  closing = false;

  readonly #started = performance.now();
  #host: string;
  readonly #tcp: TcpSettings;
  readonly #resolver: TargetResolver;
  readonly #keepAliveMs: number;
  readonly #onOpen: ((relay: TcpRelay<C>, info: RelayOpenInfo) => void) | undefined;
  readonly #onClose: (relay: TcpRelay<C>, info: RelayCloseInfo) => void;
  readonly #up: Flow;
  readonly #down: Flow;
  #family: 4 | 6 = 4;
  #addresses: readonly ResolvedAddress[] = [];
  #attempt = 0;
  readonly #failover: ((relay: TcpRelay<C>, reason: string) => Endpoint | undefined) | undefined;
  readonly #attemptMs: number;
  readonly #header: Buffer | undefined;
  /** Bounds the current target's attempt when failing over. */
  #attemptTimer: NodeJS.Timeout | null = null;
  /** Bumped when the relay moves to another target: answers about the old one are ignored. */
  #generation = 0;
  /** The connect timer while dialing, then the inactivity timer. */
  #timer: NodeJS.Timeout | null = null;
  #clientClosed = false;
  #targetClosed = true;
  #finished = false;
  #cause: CloseCause = 'complete';
  #error: string | undefined;
  #errorType: ErrorType | undefined;
  // Inactivity bookkeeping, in performance.now() ms; see the header for the rules.
  #seenReads = 0;
  #lastRead = 0;
  #lastActive = 0;
  #tickMs = 0;
  // After the meter's drop: when the drain gives up, and since when libuv's queues are empty while
  // the kernel's cannot be seen (-1: not yet).
  #drainDeadline = -1;
  #unseenSince = -1;
  /** Relayed bytes that never reached the target / the client (known once a drop's drain ends). */
  #undeliveredSent = 0;
  #undeliveredReceived = 0;

  constructor(options: TcpRelayOptions<C>) {
    const client = options.client;
    this.client = client;
    // Absent context: C is `undefined` (the default type argument).
    this.context = options.context as C;
    this.stats = options.stats;
    this.meter = options.meter;
    this.readLimit = options.readLimit;
    this.#host = options.target.host;
    this.targetPort = options.target.port;
    this.#tcp = options.tcp;
    this.#resolver = options.resolver ?? defaultResolver;
    this.#keepAliveMs = options.keepAliveMs ?? DEFAULT_KEEPALIVE_MS;
    this.#onOpen = options.onOpen;
    this.#onClose = options.onClose;
    this.#failover = options.failover;
    this.#attemptMs = options.failover !== undefined ? options.attemptTimeoutMs ?? 0 : 0;
    this.#header = options.header;
    const bulk = options.bulkReads ?? true;
    this.#up = new Flow(this, true, bulk);
    this.#down = new Flow(this, false, bulk);
    this.#up.src = client;
    this.#down.dst = client;

    client.onError = this.#onClientError;
    client.onClose = this.#onClientClose;
    client.onEnd = this.#onClientEnd;
    if (client.destroyed) {
      // Closed before the relay started; its close may already have been reported.
      this.#clientClosed = client.closed;
      process.nextTick(this.#abortGoneClient);
      return;
    }
    if (options.clientPreset !== true) {
      client.setNoDelay();
      if (this.#keepAliveMs > 0) client.setKeepAlive(this.#keepAliveMs);
    }
    client.setSink(this.#up);
    if (options.early !== undefined && options.early.length > 0) this.#up.early = [...options.early];

    if (this.#tcp.connect_timeout > 0) {
      this.#timer = setTimeout(this.#onConnectTimeout, this.#tcp.connect_timeout);
      this.#timer.unref();
    }
    this.#resolve();
  }

  get bytesSent(): number {
    return this.#up.bytes;
  }

  get bytesReceived(): number {
    return this.#down.bytes;
  }

  get open(): boolean {
    return this.connected && !this.closing;
  }

  get bufferedBytes(): number {
    // The flows write to the handles directly: what waits for a peer is in libuv's queue.
    let held = this.client.pendingWriteBytes;
    if (this.target !== null) held += this.target.pendingWriteBytes;
    for (const chunk of this.#up.early ?? []) held += chunk.length;
    return held;
  }

  destroy(reason = 'closed by the proxy'): void {
    this.#abort(null, reason, 'destroyed');
  }

  /** A write (or a read start) on `end` failed: as an error event from that end. */
  failed(end: TcpEnd, err: NodeJS.ErrnoException): void {
    if (end === this.client) this.#onClientError(err);
    else if (end === this.target) this.#onTargetError(err);
  }

  /** The meter said drop: stop reading, let what was relayed leave, then reset (see the header). */
  drop(direction: RelayDirection): void {
    if (this.closing) return;
    const what = direction === 'sent' ? 'client → target' : 'target → client';
    this.closing = true;
    this.#cause = 'dropped';
    this.#error = `dropped by the rate limit (${what})`;
    this.#stopTimers();
    this.client.stopReading();
    this.target?.stopReading();
    const now = performance.now();
    this.#drainDeadline = now + DRAIN_DEADLINE_MS;
    this.#drainPoll();
  }

  // ---- dialing ----------------------------------------------------------------------------

  #resolve(): void {
    const host = this.#host;
    if (host === '' || !Number.isInteger(this.targetPort) || this.targetPort <= 0 || this.targetPort > 65535) {
      process.nextTick(this.#abortInvalidTarget);
      return;
    }
    if (this.#attemptMs > 0) {
      if (this.#attemptTimer !== null) clearTimeout(this.#attemptTimer);
      this.#attemptTimer = setTimeout(this.#onAttemptTimeout, this.#attemptMs);
      this.#attemptTimer.unref();
    }
    const known = this.#resolver.peek(host);
    if (known !== undefined) {
      this.#onResolved(known);
      return;
    }
    const generation = this.#generation;
    this.#resolver.resolve(host).then(
      (addresses) => {
        if (generation === this.#generation) this.#onResolved(addresses);
      },
      (err: unknown) => {
        if (generation === this.#generation) this.#onResolveFailed(err);
      },
    );
  }

  /** The current target cannot be connected: moves to the next one `failover` names, if any. */
  #failOver(reason: string): boolean {
    if (this.#failover === undefined || this.closing) return false;
    const next = this.#failover(this, reason);
    if (next === undefined || this.closing) return false;
    if (this.target !== null) this.#discardAttempt(this.target);
    this.#generation++;
    this.#host = next.host;
    this.targetPort = next.port;
    this.targetIp = '';
    this.#resolve();
    return true;
  }

  readonly #onAttemptTimeout = (): void => {
    this.#attemptTimer = null;
    if (this.connected || this.closing) return;
    const what = this.target === null ? `resolving ${this.#host}` : `connect to ${formatAddress(this.targetIp, this.targetPort)}`;
    const reason = `${what} timed out after ${this.#attemptMs} ms`;
    if (this.#failOver(reason)) return;
    this.#abort(this.target === null ? 'target_resolve' : 'target_connect', reason, 'dial_failed');
  };

  readonly #onResolved = (addresses: readonly ResolvedAddress[]): void => {
    if (this.closing) return;
    try {
      this.#addresses = addresses;
      this.#dial(0);
    } catch (err) {
      // Dialing throws only for invalid arguments; never let it become an unhandled rejection.
      this.#abort('target_connect', `cannot dial ${this.#host}: ${(err as Error).message}`, 'dial_failed');
    }
  };

  readonly #onResolveFailed = (err: unknown): void => {
    const reason = err instanceof ResolveError ? err.message : `cannot resolve ${this.#host}: ${String(err)}`;
    if (this.#failOver(reason)) return;
    this.#abort('target_resolve', reason, 'dial_failed');
  };

  readonly #abortInvalidTarget = (): void => {
    this.#abort('invalid_target', `invalid target address ${formatAddress(this.#host, this.targetPort)}`, 'dial_failed');
  };

  readonly #abortGoneClient = (): void => {
    this.#abort(null, 'client closed before the relay started', 'error');
  };


  #dial(index: number): void {
    const address = this.#addresses[index]!;
    this.#attempt = index;
    this.targetIp = address.address;
    this.#family = address.family;
    const down = this.#down;
    down.newSource();
    const target = tcpEnds().dial(address.address, this.targetPort, address.family);
    this.target = target;
    this.#targetClosed = false;
    down.src = target;
    target.onError = this.#onTargetError;
    target.onClose = this.#onTargetClose;
    target.onEnd = this.#onTargetEnd;
    target.onConnect = this.#onTargetConnect;
    target.setSink(down);
  }

  /** Forgets a failed connection attempt so that the next address can be tried. */
  #discardAttempt(target: TcpEnd): void {
    target.onError = target.onClose = target.onEnd = target.onConnect = noop;
    target.close();
    this.target = null;
    this.#targetClosed = true;
    this.#down.src = null;
  }

  readonly #onConnectTimeout = (): void => {
    this.#timer = null;
    if (this.connected || this.closing) return;
    const ms = this.#tcp.connect_timeout;
    if (this.target === null) {
      this.#abort('target_resolve', `resolving ${this.#host} timed out after ${ms} ms`, 'dial_failed');
    } else {
      const where = formatAddress(this.targetIp, this.targetPort);
      this.#abort('target_connect', `connect to ${where} timed out after ${ms} ms`, 'dial_failed');
    }
  };

  readonly #onTargetConnect = (): void => {
    const target = this.target;
    if (this.closing || target === null) return;
    this.connected = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#attemptTimer !== null) clearTimeout(this.#attemptTimer);
    this.#attemptTimer = null;
    target.setNoDelay();
    if (this.#keepAliveMs > 0) setKeepAliveLater(target, this.#keepAliveMs);
    const up = this.#up;
    up.dst = target;
    if (this.#header !== undefined) up.writeFirst(this.#header);
    if (this.closing) return; // the header could not be written
    this.#onOpen?.(this, { target_ip: this.targetIp, target_port: this.targetPort, family: this.#family });
    if (this.closing) return; // onOpen destroyed us
    this.#startTimer();

    const early = up.early;
    up.early = null;
    if (early !== null) {
      for (const chunk of early) {
        up.forward(chunk, chunk.length, true);
        if (this.closing) return;
      }
    }
    if (up.eof) up.endDestination();
    else if (!up.pending && !up.throttled) up.resume();
    if (!this.closing) this.#down.resume();
  };

  // ---- events -------------------------------------------------------------------------------

  readonly #onClientError = (err: NodeJS.ErrnoException): void => {
    this.#abort(errorTypeOf('client', err), `client ${describeError(err)}`, 'error');
  };

  readonly #onTargetError = (err: NodeJS.ErrnoException): void => {
    if (this.connected) {
      this.#abort(errorTypeOf('target', err), `target ${describeError(err)}`, 'error');
      return;
    }
    if (this.closing) return;
    const where = formatAddress(this.targetIp, this.targetPort);
    const next = this.#attempt + 1;
    if (next < this.#addresses.length && this.target !== null) {
      this.#discardAttempt(this.target);
      this.#dial(next);
      return;
    }
    const reason = `connect to ${where} failed: ${describeError(err)}`;
    if (this.#failOver(reason)) return;
    this.#abort('target_connect', reason, 'dial_failed');
  };

  /**
   * End of stream from the client or the target: passed on as a FIN — unless it was really a
   * reset. libuv reports a reset that arrives right after data as an end of stream (a partial read
   * with POLLHUP), and passing that on as a FIN would make a truncated transfer look complete; the
   * kernel has already closed such a socket, which a FIN leaves open (see wasReset).
   */
  readonly #onClientEnd = (): void => {
    if (this.client.wasReset()) this.#onClientError(resetError());
    else this.#up.onEnd();
  };

  readonly #onTargetEnd = (): void => {
    if (this.target !== null && this.target.wasReset()) this.#onTargetError(resetError());
    else this.#down.onEnd();
  };

  readonly #onClientClose = (): void => {
    this.#clientClosed = true;
    if (!this.closing && !endedCleanly(this.client)) {
      // Destroyed without an error event: by someone else, or before the target connected.
      this.#abort(null, 'client connection closed', 'error');
    }
    this.#maybeFinish();
  };

  readonly #onTargetClose = (): void => {
    this.#targetClosed = true;
    if (!this.closing && this.target !== null && !endedCleanly(this.target)) {
      this.#abort(null, 'target connection closed', 'error');
    }
    this.#maybeFinish();
  };

  // ---- inactivity timer ---------------------------------------------------------------------

  #startTimer(): void {
    const { read_timeout, write_timeout, idle_timeout } = this.#tcp;
    let shortest = Infinity;
    for (const ms of [read_timeout, write_timeout, idle_timeout]) if (ms > 0 && ms < shortest) shortest = ms;
    if (shortest === Infinity) return;
    const now = performance.now();
    this.#lastRead = now;
    this.#lastActive = now;
    this.#tickMs = Math.max(MIN_TICK_MS, Math.floor(shortest / TICKS_PER_TIMEOUT));
    this.#timer = setTimeout(this.#onTick, this.#tickMs);
    this.#timer.unref();
  }

  readonly #onTick = (): void => {
    if (this.closing || this.#timer === null) return;
    const now = performance.now();
    const up = this.#up;
    const down = this.#down;
    const reads = up.bytes + down.bytes;
    if (reads !== this.#seenReads) {
      this.#seenReads = reads;
      this.#lastRead = now;
      this.#lastActive = now;
    }
    const upMoved = up.observe(now);
    const downMoved = down.observe(now);
    const throttled = up.throttled || down.throttled;
    if (upMoved || downMoved || throttled) this.#lastActive = now;
    if (up.pending || down.pending || throttled) this.#lastRead = now;

    const { read_timeout, write_timeout, idle_timeout } = this.#tcp;
    if (write_timeout > 0) {
      const stuck = up.isStuck(now, write_timeout) ? 'target' : down.isStuck(now, write_timeout) ? 'client' : null;
      if (stuck !== null) {
        this.#abort('timeout', `write timeout: the ${stuck} accepted no data for ${write_timeout} ms`, 'timeout');
        return;
      }
    }
    if (idle_timeout > 0 && now - this.#lastActive >= idle_timeout) {
      this.#abort('timeout', `idle timeout: no data in either direction for ${idle_timeout} ms`, 'timeout');
      return;
    }
    if (read_timeout > 0 && now - this.#lastRead >= read_timeout) {
      const what = reads === 0 ? 'the client sent nothing' : 'neither side sent anything';
      this.#abort('timeout', `read timeout: ${what} for ${read_timeout} ms`, 'timeout');
      return;
    }
    // The next look: a tick on, or exactly when a timeout falls due if that is sooner. (Ticks
    // alone would add up to a tick of lateness: the loop's cached clock makes a timer fire a
    // little early by performance.now(), and the due check then waits for the following tick.)
    let next = this.#tickMs;
    if (idle_timeout > 0) next = Math.min(next, this.#lastActive + idle_timeout - now);
    if (read_timeout > 0) next = Math.min(next, this.#lastRead + read_timeout - now);
    if (write_timeout > 0) {
      if (up.stuckSince >= 0) next = Math.min(next, up.stuckSince + write_timeout - now);
      if (down.stuckSince >= 0) next = Math.min(next, down.stuckSince + write_timeout - now);
    }
    if (next >= this.#tickMs) {
      this.#timer.refresh();
      return;
    }
    this.#timer = setTimeout(this.#onTick, Math.max(1, Math.ceil(next)));
    this.#timer.unref();
  };

  // ---- ending -------------------------------------------------------------------------------

  /** One look at a dropped connection's queues: reset once they are empty or the deadline passed. */
  readonly #drainPoll = (): void => {
    this.#timer = null;
    if (this.#drainDeadline < 0) return;
    const toClient = queuedBytes(this.client);
    const toTarget = queuedBytes(this.target);
    const now = performance.now();
    let done = toClient === 0 && toTarget === 0;
    if (!done && toClient <= 0 && toTarget <= 0) {
      // Only the kernel's queue is left, and it cannot be seen: give it a moment.
      if (this.#unseenSince < 0) this.#unseenSince = now;
      done = now - this.#unseenSince >= UNSEEN_QUEUE_GRACE_MS;
    }
    if (done || now >= this.#drainDeadline) {
      this.#endDrain();
      return;
    }
    this.#timer = setTimeout(this.#drainPoll, DRAIN_POLL_MS);
  };

  /** Resets both sockets of a dropped connection; what is still queued never arrives, and is not counted. */
  #endDrain(): void {
    const toClient = queuedBytes(this.client);
    const toTarget = queuedBytes(this.target);
    this.#drainDeadline = -1;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    const lostReceived = toClient > 0 ? toClient : 0;
    const lostSent = toTarget > 0 ? toTarget : 0;
    if (lostReceived + lostSent > 0) {
      this.#undeliveredReceived = Math.min(lostReceived, this.#down.bytes);
      this.#undeliveredSent = Math.min(lostSent, this.#up.bytes);
      this.stats.undelivered(this.#undeliveredSent, this.#undeliveredReceived);
      const lost: string[] = [];
      if (this.#undeliveredReceived > 0) lost.push(`${this.#undeliveredReceived} bytes to the client`);
      if (this.#undeliveredSent > 0) lost.push(`${this.#undeliveredSent} bytes to the target`);
      this.#error += `; ${lost.join(' and ')} did not arrive before the reset (not counted)`;
    } else if (toClient < 0 || toTarget < 0) {
      this.#error += '; delivery of the last bytes unconfirmed (the send queue cannot be seen without the addon or on the public path)';
    }
    kill(this.client, true);
    if (this.target !== null) kill(this.target, this.connected);
    this.#maybeFinish();
  }

  #abort(type: ErrorType | null, reason: string, cause: CloseCause): void {
    if (this.closing) {
      // An error, or destroy(), while a dropped connection drains: reset now.
      if (this.#drainDeadline >= 0) this.#endDrain();
      return;
    }
    this.closing = true;
    this.#cause = cause;
    this.#error = reason;
    this.#errorType = type ?? undefined;
    if (type !== null) this.stats.error(type);
    this.#stopTimers();
    kill(this.client, true);
    if (this.target !== null) kill(this.target, this.connected);
    this.#maybeFinish();
  }

  #stopTimers(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#attemptTimer !== null) clearTimeout(this.#attemptTimer);
    this.#attemptTimer = null;
    this.#up.stop();
    this.#down.stop();
  }

  #maybeFinish(): void {
    if (this.#finished || !this.#clientClosed || !this.#targetClosed) return;
    this.#finished = true;
    this.closing = true;
    this.#stopTimers();
    // Both sockets are closed: nothing can read into or write from the buffers any more.
    this.#up.release();
    this.#down.release();
    const info: { -readonly [K in keyof RelayCloseInfo]: RelayCloseInfo[K] } = {
      cause: this.#cause,
      opened: this.connected,
      bytes_sent: this.#up.bytes - this.#undeliveredSent,
      bytes_received: this.#down.bytes - this.#undeliveredReceived,
      duration_ms: Math.round(performance.now() - this.#started),
      target_ip: this.targetIp,
      target_port: this.targetPort,
    };
    // Added only when there (no spreads: this runs once per connection).
    if (this.#error !== undefined) info.error = this.#error;
    if (this.#errorType !== undefined) info.error_type = this.#errorType;
    this.#onClose(this, info);
  }
}

/**
 * What an end still has to send: libuv's queue plus the kernel's unacknowledged bytes. 0 once the
 * end is closed (nothing more can leave); -1 when libuv's queue is empty but the kernel's cannot be
 * seen (no addon).
 */
function queuedBytes(end: TcpEnd | null): number {
  if (end === null || end.destroyed) return 0;
  const kernel = end.unsentBytes();
  const libuv = end.pendingWriteBytes;
  if (kernel < 0) return libuv > 0 ? libuv : -1;
  return libuv + kernel;
}

/** The error a reset reported as an end of stream stands for. */
function resetError(): NodeJS.ErrnoException {
  return Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET', syscall: 'read' });
}

/** Ends a connection: with a RST when `reset` (see the header), else a plain close. */
function kill(end: TcpEnd, reset: boolean): void {
  if (end.destroyed) return;
  if (reset) end.reset();
  else end.close();
}

/** Both halves ended normally: FIN received, our FIN sent. */
function endedCleanly(end: TcpEnd): boolean {
  return end.readableEnded && end.writableFinished;
}

function errorTypeOf(side: 'client' | 'target', err: NodeJS.ErrnoException): ErrorType {
  const writing = err.syscall === 'write' || err.syscall === 'writev' || err.syscall === 'shutdown';
  if (side === 'client') return writing ? 'client_write' : 'client_read';
  return writing ? 'target_write' : 'target_read';
}

const ERROR_TEXT: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset by peer',
  ECONNABORTED: 'connection aborted',
  EPIPE: 'broken pipe (the peer closed its end)',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'no route to host',
  ENETUNREACH: 'network unreachable',
  EADDRNOTAVAIL: 'address not available',
};

function describeError(err: NodeJS.ErrnoException): string {
  const code = err.code;
  if (code === undefined) return err.message;
  const text = ERROR_TEXT[code];
  return text === undefined ? err.message : `${text} (${code})`;
}

function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
