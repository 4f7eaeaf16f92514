/**
 * A listener's allowlist: which client addresses may connect at all. Checked before any limit, so a
 * denied client costs no quota.
 */
import type ipaddr from 'ipaddr.js';
import { mappedIPv4, parseIPv4, parseIPv6 } from './address.js';

const IPV4_MAPPED_BITS = 96;

interface Ipv6Rule {
  readonly network: ipaddr.IPv6;
  readonly prefix: number;
}

function ipv4Mask(prefix: number): number {
  // `<< 32` is `<< 0` in JavaScript, hence the special case.
  return prefix === 0 ? 0 : (~0 << (32 - prefix)) | 0;
}

/**
 * Built once per listener from the normalised config's canonical CIDRs (`10.0.0.0/8`,
 * `192.0.2.7/32`, `2001:db8::/32`; a bare address means a single host). IPv4 clients, including
 * IPv4-mapped IPv6 ones, are matched against the IPv4 rules only, so `::/0` admits every IPv6
 * client and no IPv4 one. A rule inside `::ffff:0:0/96` names IPv4 clients in mapped form and is
 * turned into the IPv4 rule it stands for (`::ffff:0:0/96` is `0.0.0.0/0`), as the original does.
 * An empty list denies everyone.
 *
 * The IPv4 check is a scan of network/mask pairs in typed arrays: no allocation, and for the few
 * rules an operator writes, faster than any index. IPv6 clients go through ipaddr.js.
 */
export class Allowlist {
  // Signed 32-bit values: `ip & mask` yields one, so the comparison never boxes a number.
  readonly #v4Networks: Int32Array;
  readonly #v4Masks: Int32Array;
  readonly #v6Rules: readonly Ipv6Rule[];

  constructor(cidrs: readonly string[]) {
    const v4: Array<{ network: number; prefix: number }> = [];
    const v6: Ipv6Rule[] = [];
    for (const cidr of cidrs) {
      const slash = cidr.indexOf('/');
      const addressText = slash === -1 ? cidr : cidr.slice(0, slash);
      const prefixText = slash === -1 ? '' : cidr.slice(slash + 1);
      const asV4 = parseIPv4(addressText);
      const v6Address = asV4 === -1 ? parseIPv6(addressText) : null;
      if (asV4 === -1 && v6Address === null) throw new TypeError(`allowlist: "${cidr}" is not an IP address or CIDR`);
      const bits = asV4 === -1 ? 128 : 32;
      const prefix = slash === -1 ? bits : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
      if (!(prefix <= bits)) throw new TypeError(`allowlist: "${cidr}" has a bad prefix length`);

      if (v6Address === null) {
        v4.push({ network: asV4, prefix });
      } else if (prefix >= IPV4_MAPPED_BITS && v6Address.isIPv4MappedAddress()) {
        v4.push({ network: mappedIPv4(v6Address), prefix: prefix - IPV4_MAPPED_BITS });
      } else {
        v6.push({ network: v6Address, prefix });
      }
    }
    // Widest networks first: they are the likeliest to match, ending the scan early.
    v4.sort((a, b) => a.prefix - b.prefix);
    this.#v4Networks = new Int32Array(v4.length);
    this.#v4Masks = new Int32Array(v4.length);
    v4.forEach((rule, i) => {
      const mask = ipv4Mask(rule.prefix);
      this.#v4Masks[i] = mask;
      this.#v4Networks[i] = rule.network & mask;
    });
    this.#v6Rules = v6;
  }

  /** True when no rule can ever match: every client is denied. */
  get isEmpty(): boolean {
    return this.#v4Masks.length === 0 && this.#v6Rules.length === 0;
  }

  /** Whether `ip` may connect. Expects a normalised address but copes with the mapped form too. */
  allows(ip: string): boolean {
    const v4 = parseIPv4(ip);
    if (v4 !== -1) return this.#allowsIPv4(v4);
    const v6 = parseIPv6(ip);
    if (v6 === null) return false;
    if (v6.isIPv4MappedAddress()) return this.#allowsIPv4(mappedIPv4(v6));
    for (const rule of this.#v6Rules) {
      if (v6.match(rule.network, rule.prefix)) return true;
    }
    return false;
  }

  #allowsIPv4(ip: number): boolean {
    const networks = this.#v4Networks;
    const masks = this.#v4Masks;
    for (let i = 0; i < networks.length; i++) {
      if ((ip & masks[i]) === networks[i]) return true;
    }
    return false;
  }
}
