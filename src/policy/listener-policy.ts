/**
 * The whole admission decision for one listener, in the one order that is right: normalise the
 * peer address, check the allowlist, and only then the rate limits — so an IPv4 client on a
 * dual-stack socket meets the IPv4 rules, and a denied client costs no quota.
 */
import type { ListenerConfig } from '../config/types.js';
import { normalizeAddress } from './address.js';
import { Allowlist } from './allowlist.js';
import { RateLimiter, type Clock, type RateLimiterOptions } from './rate-limiter.js';
import { REFUSED, type Verdict } from './verdict.js';

export class ListenerPolicy {
  readonly #allowlist: Allowlist;
  readonly #limiter: RateLimiter;

  constructor(allowlist: Allowlist, limiter: RateLimiter) {
    this.#allowlist = allowlist;
    this.#limiter = limiter;
  }

  static fromConfig(
    config: Pick<ListenerConfig, 'allowlist' | 'rate_limits'>,
    clock: Clock,
    options?: RateLimiterOptions,
  ): ListenerPolicy {
    return new ListenerPolicy(new Allowlist(config.allowlist), new RateLimiter(config.rate_limits, clock, options));
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
    if (!this.#allowlist.allows(address)) return REFUSED.acl;
    return this.#limiter.admit(address);
  }
}
