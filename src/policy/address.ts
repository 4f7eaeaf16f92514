/**
 * Peer addresses in the one form every policy decision, rate-limit key and log line uses: dotted
 * IPv4 for IPv4 clients, including those a dual-stack `[::]` socket reports as `::ffff:a.b.c.d`,
 * and canonical lower-case (RFC 5952) IPv6 otherwise.
 */
import ipaddr from 'ipaddr.js';

const MAPPED_PREFIX = '::ffff:';
const DIGIT_0 = 48;
const DIGIT_9 = 57;
const DOT = 46;

/**
 * Strict four-part decimal IPv4 (`10.1.2.3`) starting at `from`, as an unsigned 32-bit number, or
 * -1. Hand-written because it runs per connection and because ipaddr.js also accepts legacy forms
 * (`10.1`, `010.0.0.1` as octal) that a socket never reports and an allowlist must not guess at.
 */
export function parseIPv4(text: string, from = 0): number {
  const end = text.length;
  let value = 0;
  let parts = 0;
  let i = from;
  while (parts < 4) {
    const start = i;
    let octet = 0;
    while (i < end) {
      const c = text.charCodeAt(i);
      if (c < DIGIT_0 || c > DIGIT_9) break;
      octet = octet * 10 + (c - DIGIT_0);
      i++;
    }
    const digits = i - start;
    // No leading zeros: "010" is octal to some parsers and decimal to others.
    if (digits === 0 || digits > 3 || octet > 255 || (digits > 1 && text.charCodeAt(start) === DIGIT_0)) return -1;
    value = value * 256 + octet;
    parts++;
    if (parts < 4) {
      if (i >= end || text.charCodeAt(i) !== DOT) return -1;
      i++;
    }
  }
  return i === end ? value : -1;
}

/**
 * An IPv6 address, its zone id (`%eth0`) ignored, or null. The zone is cut off here because
 * ipaddr.js only takes alphanumeric ones, and interface names such as `eth0.100` are not. A dotted
 * IPv4 tail is rewritten into two hex groups first: ipaddr.js 2.5 reads any such tail as
 * IPv4-mapped (`::1.2.3.4` comes back as `::ffff:102:304`), which would let an IPv4-compatible
 * address pass for an IPv4 client.
 */
export function parseIPv6(text: string): ipaddr.IPv6 | null {
  const zone = text.indexOf('%');
  let candidate = zone === -1 ? text : text.slice(0, zone);
  if (candidate.includes('.')) {
    const colon = candidate.lastIndexOf(':');
    const v4 = colon === -1 ? -1 : parseIPv4(candidate, colon + 1);
    if (v4 === -1) return null;
    candidate = `${candidate.slice(0, colon + 1)}${Math.floor(v4 / 65536).toString(16)}:${(v4 % 65536).toString(16)}`;
  }
  if (!ipaddr.IPv6.isValid(candidate)) return null;
  return ipaddr.IPv6.parse(candidate);
}

/** The unsigned 32-bit IPv4 address inside an IPv4-mapped IPv6 address. */
export function mappedIPv4(address: ipaddr.IPv6): number {
  return address.parts[6] * 65536 + address.parts[7];
}

/**
 * The canonical form of a socket's `remoteAddress`. Plain IPv4 and the `::ffff:a.b.c.d` form Node
 * gives for IPv4 clients on a dual-stack socket are handled without ipaddr.js, since one of the two
 * is what nearly every connection carries. A string that is no IP address at all comes back
 * unchanged, and the allowlist denies it.
 */
export function normalizeAddress(ip: string): string {
  if (ip.indexOf(':') === -1) return ip;
  if (ip.startsWith(MAPPED_PREFIX) && parseIPv4(ip, MAPPED_PREFIX.length) !== -1) {
    return ip.slice(MAPPED_PREFIX.length);
  }
  const v6 = parseIPv6(ip);
  if (v6 === null) return ip;
  if (v6.isIPv4MappedAddress()) return v6.toIPv4Address().toString();
  // The zone stays: fe80::1 on two interfaces may be two different hosts.
  const zone = ip.indexOf('%');
  return zone === -1 ? v6.toRFC5952String() : `${v6.toRFC5952String()}${ip.slice(zone)}`;
}
