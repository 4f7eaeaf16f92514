/**
 * Allowlist entries: an address or a CIDR network, IPv4 or IPv6, checked strictly at load time so
 * the proxy never meets a bad one. Returns the canonical `network/prefix` form.
 */
import ipaddr from 'ipaddr.js';

export type CidrResult = { ok: true; cidr: string } | { ok: false; message: string };

const EXAMPLES = 'e.g. "10.0.0.0/8", "192.0.2.7" or "2001:db8::/32"';

function parseAddress(text: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  // ipaddr.js also accepts legacy IPv4 forms ("10", "0x0a.0.0.1"); an allowlist must not.
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) return ipaddr.IPv4.parse(text);
  if (!text.includes('%') && ipaddr.IPv6.isValid(text)) return ipaddr.IPv6.parse(text);
  return undefined;
}

export function parseAllowlistEntry(raw: string): CidrResult {
  const text = raw.trim();
  const slash = text.indexOf('/');
  const addressText = slash < 0 ? text : text.slice(0, slash);
  if (addressText.includes(':') && addressText.includes('.') && !/^::ffff:/i.test(addressText)) {
    // "IPv4-compatible" IPv6 (::10.0.0.0) is deprecated, and ipaddr.js 2.5 reads it as IPv4-mapped,
    // which would make the rule match IPv4 clients: ask for what was meant instead.
    return { ok: false, message: `"${raw}": an IPv4 address inside IPv6 must be written IPv4-mapped ("::ffff:${addressText.slice(addressText.lastIndexOf(':') + 1)}"), or as plain IPv4` };
  }
  const address = parseAddress(addressText);
  if (!address) return { ok: false, message: `"${raw}" is not an IP address or CIDR network: write ${EXAMPLES}` };
  const bits = address.kind() === 'ipv4' ? 32 : 128;
  if (slash < 0) return { ok: true, cidr: `${address.toString()}/${bits}` };

  const prefixText = text.slice(slash + 1);
  const prefix = /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= bits)) {
    return { ok: false, message: `"${raw}": the prefix length must be a number from 0 to ${bits}` };
  }
  const network = (address.kind() === 'ipv4'
    ? ipaddr.IPv4.networkAddressFromCIDR(`${address.toString()}/${prefix}`)
    : ipaddr.IPv6.networkAddressFromCIDR(`${address.toString()}/${prefix}`)
  ).toString();
  if (network !== address.toString()) {
    return {
      ok: false,
      message: `"${raw}" has host bits set: write "${network}/${prefix}" for the network, or "${address.toString()}/${bits}" for the single address`,
    };
  }
  return { ok: true, cidr: `${network}/${prefix}` };
}
