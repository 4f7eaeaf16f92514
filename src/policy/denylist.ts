/**
 * A listener's denylist: client addresses refused whatever the allowlist says, checked first. The
 * entries and their matching are exactly the allowlist's (IPv4 clients, IPv4-mapped ones included,
 * meet the IPv4 entries; a rule inside `::ffff:0:0/96` is the IPv4 rule it names), so the one
 * matcher serves both; only the meaning of a match differs.
 */
import { Allowlist } from './allowlist.js';

export class Denylist {
  readonly #matcher: Allowlist;

  constructor(cidrs: readonly string[]) {
    this.#matcher = new Allowlist(cidrs);
  }

  /** A denylist without entries (the policy then skips it altogether). */
  get isEmpty(): boolean {
    return this.#matcher.isEmpty;
  }

  /** Whether `ip` is refused. Expects a normalised address but copes with the mapped form too. */
  denies(ip: string): boolean {
    return this.#matcher.allows(ip);
  }
}
