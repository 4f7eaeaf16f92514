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
 * Dialing (tcp-dialer.ts): resolution, each resolved address in turn, connect_timeout and, with
 * several targets, failover. `header` (a PROXY protocol header) is written to the target before
 * anything else and is not counted as client bytes. Both sockets get TCP_NODELAY (we forward what
 * we read at once; Nagle would only add latency to small requests) and keepalive (60 s by default,
 * so a peer that vanished without a FIN is found; on the target's socket once the connection has
 * lived a second: keepalive-later.ts).
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
 * The meter's drop resets only once what was relayed has left (tcp-drop-drain.ts says why and
 * how long it waits); the bytes the peer never got are taken off the counts.
 *
 * Timeouts (tcp.read_timeout, write_timeout, idle_timeout) are inactivity timeouts, never
 * deadlines from the start: tcp-inactivity.ts says the rules.
 */
import type { Endpoint, TcpSettings } from '../config/types.js';
import type { ErrorType, ListenerStats } from '../telemetry/stats.js';
import { Flow, type FlowOwner, type Meter, type ReadLimit, type RelayDirection } from './relay-flow.js';
import { setKeepAliveLater } from './keepalive-later.js';
import type { TcpEnd } from '../platform/tcp-end.js';
import { tcpEnds } from './tcp-path.js';
import { defaultResolver } from './target-resolver.js';
import { Dialer, type DialOwner } from './tcp-dialer.js';
import { DropDrain, queuedBytes, type DrainOwner } from './tcp-drop-drain.js';
import { describeError, errorTypeOf, resetError } from './tcp-error-text.js';
import { InactivityTimer, type InactivityOwner } from './tcp-inactivity.js';
import type { CloseCause, RelayCloseInfo, RelayOpenInfo, TcpRelay, TcpRelayOptions } from './tcp-relay-options.js';

export { METER_DROP, METER_OK, type Meter, type RelayDirection } from './relay-flow.js';
export { DRAIN_DEADLINE_MS, UNSEEN_QUEUE_GRACE_MS } from './tcp-drop-drain.js';
export type { CloseCause, RelayCloseInfo, RelayOpenInfo, TcpRelay, TcpRelayOptions } from './tcp-relay-options.js';

export const DEFAULT_KEEPALIVE_MS = 60_000;

/** Starts relaying `options.client` to `options.target`. Never throws for network reasons. */
export function startTcpRelay<C = undefined>(options: TcpRelayOptions<C>): TcpRelay<C> {
  return new Relay<C>(options);
}

function noop(): void {}

class Relay<C> implements TcpRelay<C>, FlowOwner, DialOwner, DrainOwner, InactivityOwner {
  readonly client: TcpEnd;
  readonly context: C;
  readonly startedAt = Date.now();
  readonly stats: ListenerStats;
  readonly meter: Meter | undefined;
  readonly readLimit: ReadLimit | undefined;
  target: TcpEnd | null = null;
  connected = false;
  closing = false;

  readonly #started = performance.now();
  readonly #tcp: TcpSettings;
  readonly #keepAliveMs: number;
  readonly #onOpen: ((relay: TcpRelay<C>, info: RelayOpenInfo) => void) | undefined;
  readonly #onClose: (relay: TcpRelay<C>, info: RelayCloseInfo) => void;
  readonly #failover: ((relay: TcpRelay<C>, reason: string) => Endpoint | undefined) | undefined;
  readonly #header: Buffer | undefined;
  readonly #up: Flow;
  readonly #down: Flow;
  readonly #dialer: Dialer;
  /** Once connected, with any timeout set. */
  #inactivity: InactivityTimer | null = null;
  /** After the meter's drop, until the reset. */
  #drain: DropDrain | null = null;
  #clientClosed = false;
  #targetClosed = true;
  #finished = false;
  #cause: CloseCause = 'complete';
  #error: string | undefined;
  #errorType: ErrorType | undefined;
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
    this.#tcp = options.tcp;
    this.#keepAliveMs = options.keepAliveMs ?? DEFAULT_KEEPALIVE_MS;
    this.#onOpen = options.onOpen;
    this.#onClose = options.onClose;
    this.#failover = options.failover;
    this.#header = options.header;
    this.#dialer = new Dialer(
      this, options.target, options.resolver ?? defaultResolver, this.#tcp.connect_timeout,
      options.failover !== undefined, options.attemptTimeoutMs ?? 0,
    );
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
    this.#dialer.start();
  }

  get bytesSent(): number {
    return this.#up.bytes;
  }

  get bytesReceived(): number {
    return this.#down.bytes;
  }

  get targetIp(): string {
    return this.#dialer.ip;
  }

  get targetPort(): number {
    return this.#dialer.port;
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
    this.#drain = new DropDrain(this);
    this.#drain.start();
  }

  timedOut(reason: string): void {
    this.#abort('timeout', reason, 'timeout');
  }

  // ---- dialing (the Dialer's calls) -----------------------------------------------------------

  connectTo(address: string, port: number, family: 4 | 6): void {
    const down = this.#down;
    down.newSource();
    const target = tcpEnds().dial(address, port, family);
    this.target = target;
    this.#targetClosed = false;
    down.src = target;
    target.onError = this.#onTargetError;
    target.onClose = this.#onTargetClose;
    target.onEnd = this.#onTargetEnd;
    target.onConnect = this.#onTargetConnect;
    target.setSink(down);
  }

  discardAttempt(): void {
    const target = this.target;
    if (target === null) return;
    target.onError = target.onClose = target.onEnd = target.onConnect = noop;
    target.close();
    this.target = null;
    this.#targetClosed = true;
    this.#down.src = null;
  }

  dialFailed(type: ErrorType, reason: string): void {
    this.#abort(type, reason, 'dial_failed');
  }

  nextTarget(reason: string): Endpoint | undefined {
    return this.#failover?.(this, reason);
  }

  readonly #abortGoneClient = (): void => {
    this.#abort(null, 'client closed before the relay started', 'error');
  };

  readonly #onTargetConnect = (): void => {
    const target = this.target;
    if (this.closing || target === null) return;
    this.connected = true;
    this.#dialer.stop();
    target.setNoDelay();
    if (this.#keepAliveMs > 0) setKeepAliveLater(target, this.#keepAliveMs);
    const up = this.#up;
    up.dst = target;
    if (this.#header !== undefined) up.writeFirst(this.#header);
    if (this.closing) return; // the header could not be written
    this.#onOpen?.(this, { target_ip: this.targetIp, target_port: this.targetPort, family: this.#dialer.family });
    if (this.closing) return; // onOpen destroyed us
    this.#inactivity = InactivityTimer.start(this, up, this.#down, this.#tcp);

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
    this.#dialer.attemptFailed(err);
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

  // ---- ending -------------------------------------------------------------------------------

  /** Resets both sockets of a dropped connection; what is still queued never arrives, and is not counted. */
  drained(): void {
    const drain = this.#drain;
    if (drain === null) return;
    this.#drain = null;
    drain.stop();
    const toClient = queuedBytes(this.client);
    const toTarget = queuedBytes(this.target);
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
      this.drained();
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
    this.#dialer.stop();
    this.#inactivity?.stop();
    this.#drain?.stop();
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
