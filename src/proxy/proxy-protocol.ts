/**
 * The PROXY protocol (HAProxy's doc/proxy-protocol.txt): a header a proxy puts before the data of
 * a connection so that the next hop learns the original client and destination addresses.
 * Encoding (toward targets, `proxy_protocol: v1 | v2`) and decoding (from trusted fronts,
 * `accept_proxy_protocol`), both pure: no sockets here.
 *
 * Version 1 is one line of text, at most 107 bytes with its CRLF:
 *   "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"   (TCP6 for IPv6; "PROXY UNKNOWN ...\r\n")
 * single spaces, IPv4 dotted quads without leading zeros, ports 0-65535 without leading zeros.
 *
 * Version 2 is binary: the 12-byte signature 0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A; one byte of
 * version (high nibble, always 2) and command (low nibble: 0 LOCAL, 1 PROXY); one byte of address
 * family (high: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and transport (low: 0 UNSPEC, 1 STREAM,
 * 2 DGRAM); a 16-bit big-endian length of what follows; then source address, destination address,
 * source port, destination port (4+4+2+2 bytes for INET, 16+16+2+2 for INET6, 108+108 for UNIX),
 * and optional TLVs (type byte, 16-bit length, value) up to the announced length.
 *
 * What a receiver must do, and what we do: accept only version 2 in the version nibble; drop
 * unknown commands, families and transports; for LOCAL, UNSPEC and UNIX (and v1 UNKNOWN) use the
 * connection's real endpoints; skip TLVs (we check none, CRC32C included, which the spec allows
 * when the receiver does not implement it); reject a v1 line without its CRLF in the first 107
 * bytes, or ended by a lone CR or LF.
 */
import { parseIPv4, parseIPv6 } from '../policy/address.js';

/** 0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A */
export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
/** The longest v1 line, CRLF included. */
export const V1_MAX_LENGTH = 107;
const V2_FIXED = 16;

const CMD_LOCAL = 0x0;
const CMD_PROXY = 0x1;
const AF_UNSPEC = 0x0;
const AF_INET = 0x1;
const AF_INET6 = 0x2;
const AF_UNIX = 0x3;
const T_UNSPEC = 0x0;
const T_STREAM = 0x1;
const T_DGRAM = 0x2;
const ADDRESS_LENGTH: Readonly<Record<number, number>> = { [AF_INET]: 12, [AF_INET6]: 36, [AF_UNIX]: 216 };

export interface HostPort {
  readonly ip: string;
  readonly port: number;
}

export type Transport = 'tcp' | 'udp';

/** A header as read from a front. */
export interface ProxyHeader {
  readonly version: 1 | 2;
  /**
   * The original connection's endpoints, or null when the header carries none that apply (v2
   * LOCAL, UNSPEC or UNIX; v1 UNKNOWN): then the real connection's endpoints are the ones to use.
   */
  readonly source: HostPort | null;
  readonly destination: HostPort | null;
}

export type ParseResult =
  /** More bytes are needed. */
  | { readonly kind: 'partial' }
  /** Not a valid header: close the connection. */
  | { readonly kind: 'invalid'; readonly reason: string }
  /** `length` bytes of the input were the header; the rest is the client's data. */
  | { readonly kind: 'header'; readonly header: ProxyHeader; readonly length: number };

const PARTIAL: ParseResult = Object.freeze({ kind: 'partial' });

function invalid(reason: string): ParseResult {
  return { kind: 'invalid', reason };
}

/** Whether `buf` starts with as much of `prefix` as it holds. */
function startsLike(buf: Buffer, prefix: Buffer): boolean {
  const n = Math.min(buf.length, prefix.length);
  return buf.compare(prefix, 0, n, 0, n) === 0;
}

/**
 * Reads a header, v1 or v2, from the start of what a front sent so far. Decides as early as it can:
 * input that can no longer become a header is invalid at once, so a client that is not a proxy is
 * turned away without waiting for the timeout.
 */
export function parseProxyHeader(buf: Buffer): ParseResult {
  if (buf.length === 0) return PARTIAL;
  if (startsLike(buf, V2_SIGNATURE)) return buf.length < V2_FIXED ? PARTIAL : parseV2(buf);
  if (startsLike(buf, V1_PREFIX)) return buf.length < V1_PREFIX.length ? PARTIAL : parseV1(buf);
  return invalid('no PROXY protocol header (the data does not start with "PROXY " or the v2 signature)');
}

function parseV2(buf: Buffer): ParseResult {
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) return invalid(`v2 header with version ${verCmd >> 4} (only 2 exists)`);
  const command = verCmd & 0x0f;
  if (command !== CMD_LOCAL && command !== CMD_PROXY) return invalid(`v2 header with unknown command ${command}`);
  const family = buf[13]! >> 4;
  const transport = buf[13]! & 0x0f;
  if (family > AF_UNIX) return invalid(`v2 header with unknown address family ${family}`);
  if (transport > T_DGRAM) return invalid(`v2 header with unknown transport ${transport}`);
  const length = buf.readUInt16BE(14);
  const total = V2_FIXED + length;
  if (buf.length < total) return PARTIAL;
  const none: ParseResult = { kind: 'header', header: { version: 2, source: null, destination: null }, length: total };
  // LOCAL: the front's own connection (a health check); its address block, if any, is ignored.
  if (command === CMD_LOCAL) return none;
  const needed = ADDRESS_LENGTH[family];
  if (needed !== undefined && length < needed) {
    return invalid(`v2 header too short for its addresses (${length} bytes, ${family === AF_INET ? 'IPv4' : family === AF_INET6 ? 'IPv6' : 'UNIX'} needs ${needed})`);
  }
  if (family === AF_UNSPEC || family === AF_UNIX || transport === T_UNSPEC) return none;
  const at = V2_FIXED;
  let source: string;
  let destination: string;
  let ports: number;
  if (family === AF_INET) {
    source = ipv4Text(buf, at);
    destination = ipv4Text(buf, at + 4);
    ports = at + 8;
  } else {
    source = ipv6Text(buf, at);
    destination = ipv6Text(buf, at + 16);
    ports = at + 32;
  }
  return {
    kind: 'header',
    header: {
      version: 2,
      source: { ip: source, port: buf.readUInt16BE(ports) },
      destination: { ip: destination, port: buf.readUInt16BE(ports + 2) },
    },
    length: total,
  };
}

function ipv4Text(buf: Buffer, at: number): string {
  return `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`;
}

function ipv6Text(buf: Buffer, at: number): string {
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(at + i * 2).toString(16));
  // Canonical form (RFC 5952) through the same parser the policy uses.
  return parseIPv6(groups.join(':'))!.toRFC5952String();
}

function parseV1(buf: Buffer): ParseResult {
  const limit = Math.min(buf.length, V1_MAX_LENGTH);
  let end = -1;
  for (let i = V1_PREFIX.length; i < limit; i++) {
    const c = buf[i]!;
    if (c === 0x0d) {
      if (i + 1 >= V1_MAX_LENGTH) break; // its LF would be byte 108
      if (i + 1 >= buf.length) return PARTIAL;
      if (buf[i + 1] !== 0x0a) return invalid('v1 header: a CR not followed by LF');
      end = i;
      break;
    }
    if (c === 0x0a) return invalid('v1 header: a line ending without CR');
    if (c < 0x20 || c > 0x7e) return invalid('v1 header: a byte that is not printable US-ASCII');
  }
  if (end === -1) return buf.length >= V1_MAX_LENGTH ? invalid(`v1 header: no CRLF within ${V1_MAX_LENGTH} bytes`) : PARTIAL;
  const line = buf.toString('latin1', 0, end);
  const length = end + 2;
  const parts = line.split(' ');
  if (parts[1] === 'UNKNOWN') {
    // The sender could not fill the line; whatever follows is ignored, as the spec says.
    return { kind: 'header', header: { version: 1, source: null, destination: null }, length };
  }
  if (parts.length !== 6) return invalid(`v1 header: expected "PROXY TCP4|TCP6 SRC DST SRCPORT DSTPORT", got "${printable(line)}"`);
  const [, proto, src, dst, sport, dport] = parts as [string, string, string, string, string, string];
  if (proto !== 'TCP4' && proto !== 'TCP6') return invalid(`v1 header: unknown protocol "${printable(proto)}"`);
  const check = proto === 'TCP4' ? (ip: string) => parseIPv4(ip) !== -1 : (ip: string) => !ip.includes('.') && ip.includes(':') && parseIPv6(ip) !== null;
  if (!check(src) || !check(dst)) return invalid(`v1 header: "${printable(src)}" or "${printable(dst)}" is not an ${proto === 'TCP4' ? 'IPv4' : 'IPv6'} address`);
  const sourcePort = parsePort(sport);
  const destinationPort = parsePort(dport);
  if (sourcePort === -1 || destinationPort === -1) return invalid(`v1 header: bad port "${printable(sourcePort === -1 ? sport : dport)}"`);
  const canonical = (ip: string): string => (proto === 'TCP4' ? ip : parseIPv6(ip)!.toRFC5952String());
  return {
    kind: 'header',
    header: {
      version: 1,
      source: { ip: canonical(src), port: sourcePort },
      destination: { ip: canonical(dst), port: destinationPort },
    },
    length,
  };
}

/** A decimal port 0-65535 without leading zeros, or -1. */
function parsePort(text: string): number {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text)) return -1;
  const n = Number(text);
  return n <= 65535 ? n : -1;
}

/** For messages: the bytes a stranger sent, never trusted as text. */
function printable(text: string): string {
  const clean = text.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 60 ? `${clean.slice(0, 60)}...` : clean;
}

// ---- encoding -------------------------------------------------------------------------------

/** `::ffff:a.b.c.d` (or the hex spelling) as `a.b.c.d`; other addresses unchanged. */
function unmapped(ip: string): string {
  if (!ip.includes(':')) return ip;
  const v6 = parseIPv6(ip);
  return v6 !== null && v6.isIPv4MappedAddress() ? v6.toIPv4Address().toString() : ip;
}

function isV4(ip: string): boolean {
  return parseIPv4(ip) !== -1;
}

/**
 * Source and destination in one family, as both versions require. An IPv4 client reaching an
 * IPv6 destination is written as IPv6 with the client mapped (`::ffff:a.b.c.d`); an unspecified
 * IPv6 destination (`::`, a wildcard UDP socket) next to an IPv4 client becomes `0.0.0.0`.
 */
export function sameFamily(source: HostPort, destination: HostPort): { family: 4 | 6; source: HostPort; destination: HostPort } {
  const src = unmapped(source.ip);
  let dst = unmapped(destination.ip);
  if (isV4(src) && dst === '::') dst = '0.0.0.0';
  if (isV4(src) && isV4(dst)) return { family: 4, source: { ip: src, port: source.port }, destination: { ip: dst, port: destination.port } };
  const six = (ip: string): string => (isV4(ip) ? `::ffff:${ip}` : ip);
  return { family: 6, source: { ip: six(src), port: source.port }, destination: { ip: six(dst), port: destination.port } };
}

/** A v1 line for a TCP connection from `source` to `destination`. */
export function encodeV1(source: HostPort, destination: HostPort): Buffer {
  const pair = sameFamily(source, destination);
  const text = (ip: string): string => (pair.family === 4 ? ip : parseIPv6(ip)!.toRFC5952String());
  return Buffer.from(
    `PROXY TCP${pair.family} ${text(pair.source.ip)} ${text(pair.destination.ip)} ${pair.source.port} ${pair.destination.port}\r\n`,
    'latin1',
  );
}

/** A v2 PROXY header for a connection (TCP) or a datagram flow (UDP) from `source` to `destination`. */
export function encodeV2(transport: Transport, source: HostPort, destination: HostPort): Buffer {
  const pair = sameFamily(source, destination);
  const addressLength = pair.family === 4 ? 12 : 36;
  const out = Buffer.alloc(V2_FIXED + addressLength);
  V2_SIGNATURE.copy(out, 0);
  out[12] = 0x20 | CMD_PROXY;
  out[13] = ((pair.family === 4 ? AF_INET : AF_INET6) << 4) | (transport === 'tcp' ? T_STREAM : T_DGRAM);
  out.writeUInt16BE(addressLength, 14);
  const size = pair.family === 4 ? 4 : 16;
  writeAddress(out, V2_FIXED, pair.source.ip, pair.family);
  writeAddress(out, V2_FIXED + size, pair.destination.ip, pair.family);
  out.writeUInt16BE(pair.source.port, V2_FIXED + 2 * size);
  out.writeUInt16BE(pair.destination.port, V2_FIXED + 2 * size + 2);
  return out;
}

/** A v2 LOCAL header: "this connection is the proxy's own" (health checks). */
export function encodeV2Local(): Buffer {
  const out = Buffer.alloc(V2_FIXED);
  V2_SIGNATURE.copy(out, 0);
  out[12] = 0x20 | CMD_LOCAL;
  out[13] = (AF_UNSPEC << 4) | T_UNSPEC;
  return out;
}

function writeAddress(out: Buffer, at: number, ip: string, family: 4 | 6): void {
  if (family === 4) {
    out.writeUInt32BE(parseIPv4(ip), at);
    return;
  }
  const bytes = parseIPv6(ip)!.toByteArray();
  for (let i = 0; i < 16; i++) out[at + i] = bytes[i]!;
}
