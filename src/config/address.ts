/**
 * `host:port` parsing for listen and target addresses, with messages that say how to fix them.
 */
import { isIP } from 'node:net';
import type { Endpoint } from './types.js';

export type AddressResult = { ok: true; endpoint: Endpoint } | { ok: false; message: string };

// RFC 1123 host names: labels of letters, digits and inner hyphens.
const HOSTNAME_RE = /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

interface Split {
  host: string;
  port: string;
}

function split(text: string): Split | string {
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return `"${text}": missing "]" after the IPv6 address`;
    const rest = text.slice(close + 1);
    if (!rest.startsWith(':')) return `"${text}": missing port: write [IPv6]:PORT, e.g. "[::1]:8080"`;
    return { host: text.slice(1, close), port: rest.slice(1) };
  }
  const colon = text.lastIndexOf(':');
  if (colon < 0) return `"${text}": missing port: write HOST:PORT, e.g. "0.0.0.0:8080"`;
  const host = text.slice(0, colon);
  if (host.includes(':')) {
    return `"${text}": write an IPv6 address in brackets, e.g. "[${host}]:${text.slice(colon + 1)}"`;
  }
  return { host, port: text.slice(colon + 1) };
}

function parsePort(text: string, port: string, allowZero: boolean): number | string {
  if (!/^\d{1,5}$/.test(port)) return `"${text}": the port must be a number from 1 to 65535`;
  const n = Number(port);
  if (n > 65535 || (n === 0 && !allowZero)) return `"${text}": the port must be a number from 1 to 65535`;
  return n;
}

/**
 * A listen address: an IP literal, `localhost`, or nothing (every interface, IPv4 and IPv6) before
 * the port. Port 0 asks the system for a free port.
 */
export function parseListenAddress(text: string): AddressResult {
  const parts = split(text.trim());
  if (typeof parts === 'string') return { ok: false, message: parts };
  const port = parsePort(text, parts.port, true);
  if (typeof port === 'string') return { ok: false, message: port };
  let host = parts.host;
  if (host === '*') host = '';
  if (host.toLowerCase() === 'localhost') host = '127.0.0.1';
  if (host !== '' && isIP(host) === 0) {
    return {
      ok: false,
      message: `"${text}": the host must be an IP address (names are not resolved for listening), e.g. "0.0.0.0:${port}", "127.0.0.1:${port}", "[::]:${port}"`,
    };
  }
  return { ok: true, endpoint: { host: host.toLowerCase(), port } };
}

/** A target address: an IP literal or a host name, and a port from 1 to 65535. */
export function parseTargetAddress(text: string): AddressResult {
  const parts = split(text.trim());
  if (typeof parts === 'string') return { ok: false, message: parts };
  const port = parsePort(text, parts.port, false);
  if (typeof port === 'string') return { ok: false, message: port };
  const host = parts.host;
  if (host === '') return { ok: false, message: `"${text}": the target needs a host, e.g. "192.0.2.10:${port}" or "backend.example.com:${port}"` };
  if (isIP(host) === 0 && !HOSTNAME_RE.test(host)) {
    return { ok: false, message: `"${text}": "${host}" is neither an IP address nor a valid host name` };
  }
  return { ok: true, endpoint: { host: isIP(host) === 6 ? host.toLowerCase() : host, port } };
}

/** `host:port` with IPv6 hosts bracketed, as shown in logs. */
export function formatEndpoint(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
