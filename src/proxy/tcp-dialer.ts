/**
 * Dialing a TCP relay's target (tcp-relay.ts). IP literals are dialed as they are; names go
 * through a TargetResolver (cached, see target-resolver.ts). Each resolved address is tried in
 * order until one accepts; `connect_timeout` bounds the whole dial, resolution included (0 = no
 * bound but the kernel's). With failover (several targets), a target that cannot be connected —
 * every address refused, no resolution, or the attempt's own timeout gone by — is given up for
 * the next one the relay's `failover` names, within the same `connect_timeout`. All of this is
 * set-up: the per-chunk path is the same with or without it.
 */
import type { Endpoint } from '../config/types.js';
import type { ErrorType } from '../telemetry/stats.js';
import type { TcpEnd } from '../platform/tcp-end.js';
import { ResolveError, type ResolvedAddress, type TargetResolver } from './target-resolver.js';
import { describeError, formatAddress } from './tcp-error-text.js';

/** What the dialer needs from its relay. */
export interface DialOwner {
  /** The relay is ending: answers about the dial are ignored. */
  readonly closing: boolean;
  /** The target is connected (the dialer's part is over). */
  readonly connected: boolean;
  /** The attempt in progress, null between attempts. */
  readonly target: TcpEnd | null;
  /** Starts a connection attempt to an IP literal: the relay makes the end and hooks it up. */
  connectTo(address: string, port: number, family: 4 | 6): void;
  /** Forgets the attempt in progress (its end is closed) so that another can start. */
  discardAttempt(): void;
  /** The target cannot be connected, for good: count `type`, reset the client. */
  dialFailed(type: ErrorType, reason: string): void;
  /** Several targets: the next one to try after `reason`, or undefined to give up. */
  nextTarget(reason: string): Endpoint | undefined;
}

export class Dialer {
  readonly #owner: DialOwner;
  readonly #resolver: TargetResolver;
  readonly #connectTimeoutMs: number;
  /** With failover: how long one target may take (0 = only connect_timeout bounds it). */
  readonly #attemptMs: number;
  readonly #failover: boolean;
  #host: string;
  /** The target's port, and the address being dialed or connected ('' before resolution). */
  port: number;
  ip = '';
  family: 4 | 6 = 4;
  #addresses: readonly ResolvedAddress[] = [];
  #attempt = 0;
  /** Bumped when the relay moves to another target: answers about the old one are ignored. */
  #generation = 0;
  #connectTimer: NodeJS.Timeout | null = null;
  /** Bounds the current target's attempt when failing over. */
  #attemptTimer: NodeJS.Timeout | null = null;

  constructor(owner: DialOwner, target: Endpoint, resolver: TargetResolver, connectTimeoutMs: number, failover: boolean, attemptMs: number) {
    this.#owner = owner;
    this.#host = target.host;
    this.port = target.port;
    this.#resolver = resolver;
    this.#connectTimeoutMs = connectTimeoutMs;
    this.#failover = failover;
    this.#attemptMs = failover ? attemptMs : 0;
  }

  start(): void {
    if (this.#connectTimeoutMs > 0) {
      this.#connectTimer = setTimeout(this.#onConnectTimeout, this.#connectTimeoutMs);
      this.#connectTimer.unref();
    }
    this.#resolve();
  }

  /** The target connected, or the relay ends: no more timers. */
  stop(): void {
    if (this.#connectTimer !== null) clearTimeout(this.#connectTimer);
    this.#connectTimer = null;
    if (this.#attemptTimer !== null) clearTimeout(this.#attemptTimer);
    this.#attemptTimer = null;
  }

  /** The attempt in progress failed (an error before it connected): next address, next target, or give up. */
  attemptFailed(err: NodeJS.ErrnoException): void {
    const owner = this.#owner;
    const where = formatAddress(this.ip, this.port);
    const next = this.#attempt + 1;
    if (next < this.#addresses.length && owner.target !== null) {
      owner.discardAttempt();
      this.#dial(next);
      return;
    }
    const reason = `connect to ${where} failed: ${describeError(err)}`;
    if (this.#failOver(reason)) return;
    owner.dialFailed('target_connect', reason);
  }

  #resolve(): void {
    const host = this.#host;
    if (host === '' || !Number.isInteger(this.port) || this.port <= 0 || this.port > 65535) {
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
    const owner = this.#owner;
    if (!this.#failover || owner.closing) return false;
    const next = owner.nextTarget(reason);
    if (next === undefined || owner.closing) return false;
    if (owner.target !== null) owner.discardAttempt();
    this.#generation++;
    this.#host = next.host;
    this.port = next.port;
    this.ip = '';
    this.#resolve();
    return true;
  }

  #dial(index: number): void {
    const address = this.#addresses[index]!;
    this.#attempt = index;
    this.ip = address.address;
    this.family = address.family;
    this.#owner.connectTo(address.address, this.port, address.family);
  }

  readonly #onAttemptTimeout = (): void => {
    this.#attemptTimer = null;
    const owner = this.#owner;
    if (owner.connected || owner.closing) return;
    const what = owner.target === null ? `resolving ${this.#host}` : `connect to ${formatAddress(this.ip, this.port)}`;
    const reason = `${what} timed out after ${this.#attemptMs} ms`;
    if (this.#failOver(reason)) return;
    owner.dialFailed(owner.target === null ? 'target_resolve' : 'target_connect', reason);
  };

  readonly #onResolved = (addresses: readonly ResolvedAddress[]): void => {
    if (this.#owner.closing) return;
    try {
      this.#addresses = addresses;
      this.#dial(0);
    } catch (err) {
      // Dialing throws only for invalid arguments; never let it become an unhandled rejection.
      this.#owner.dialFailed('target_connect', `cannot dial ${this.#host}: ${(err as Error).message}`);
    }
  };

  readonly #onResolveFailed = (err: unknown): void => {
    const reason = err instanceof ResolveError ? err.message : `cannot resolve ${this.#host}: ${String(err)}`;
    if (this.#failOver(reason)) return;
    this.#owner.dialFailed('target_resolve', reason);
  };

  readonly #abortInvalidTarget = (): void => {
    this.#owner.dialFailed('invalid_target', `invalid target address ${formatAddress(this.#host, this.port)}`);
  };

  readonly #onConnectTimeout = (): void => {
    this.#connectTimer = null;
    const owner = this.#owner;
    if (owner.connected || owner.closing) return;
    const ms = this.#connectTimeoutMs;
    if (owner.target === null) {
      owner.dialFailed('target_resolve', `resolving ${this.#host} timed out after ${ms} ms`);
    } else {
      owner.dialFailed('target_connect', `connect to ${formatAddress(this.ip, this.port)} timed out after ${ms} ms`);
    }
  };
}
