/**
 * The whole admission decision for one listener, in the one order that is right: normalise the
 * peer address, check the denylist, then the allowlist, and only then the rate limits — so an IPv4
 * client on a dual-stack socket meets the IPv4 rules of both lists, an address in both is refused,
 * and a denied client costs no quota.
 */
import type { ListenerConfig } from '../config/types.js';
import { normalizeAddress } from './address.js';
import { Allowlist } from './allowlist.js';
import { Denylist } from './denylist.js';
import { RateLimiter, type Clock, type RateLimiterOptions } from './rate-limiter.js';
import { REFUSED, type Verdict } from './verdict.js';

export class ListenerPolicy {
  readonly #allowlist: Allowlist;
  readonly #limiter: RateLimiter;
  /** null when the listener has none: then admitting costs not even the empty check. */
  readonly #denylist: Denylist | null;

  constructor(allowlist: Allowlist, limiter: RateLimiter, denylist: Denylist | null = null) {
    this.#allowlist = allowlist;
    this.#limiter = limiter;
    this.#denylist = denylist === null || denylist.isEmpty ? null : denylist;
  }

  static fromConfig(
    config: Pick<ListenerConfig, 'allowlist' | 'rate_limits'> & Partial<Pick<ListenerConfig, 'denylist'>>,
    clock: Clock,
    options?: RateLimiterOptions,
  ): ListenerPolicy {
    return ListenerPolicy.withLimiter(config, new RateLimiter(config.rate_limits, clock, options));
  }

  /** The lists from `config` with a given limiter (one restored from a predecessor's snapshot). */
  static withLimiter(config: Pick<ListenerConfig, 'allowlist'> & Partial<Pick<ListenerConfig, 'denylist'>>, limiter: RateLimiter): ListenerPolicy {
    const denylist = config.denylist !== undefined && config.denylist.length > 0 ? new Denylist(config.denylist) : null;
    return new ListenerPolicy(new Allowlist(config.allowlist), limiter, denylist);
  }

  /** For consume(), release() and the rest once a connection is admitted. */
  get limiter(): RateLimiter {
    return this.#limiter;
  }

  get allowlist(): Allowlist {
    return this.#allowlist;
  }

  /**
   * A new connection or UDP session from `remoteAddress` (as the socket reports it, or already
   * normalised: normalising is idempotent). An allowing verdict's `address` is the normalised form.
   */
  admit(remoteAddress: string): Verdict {
    const address = normalizeAddress(remoteAddress);
    if (this.#denylist !== null && this.#denylist.denies(address)) return REFUSED.denylist;
    if (!this.#allowlist.allows(address)) return REFUSED.acl;
    return this.#limiter.admit(address);
  }
}
