/**
 * Many client addresses on one machine: the 127.0.0.0/8 block is all loopback on Linux, so a socket
 * may bind to any address in it; an IPv6 prefix becomes local the same way with
 * `ip -6 route add local PREFIX dev lo` (removed when the test ends).
 */
import { execFileSync } from 'node:child_process';
import type { ExecutionContext } from 'ava';

/** The i-th address of 127.1.0.0/16 and up (127.1.0.1, 127.1.0.2, …): 2^22 of them, no .0 or .255. */
export function loopbackSource(i: number): string {
  const host = i % 254;
  const rest = Math.floor(i / 254);
  return `127.${1 + Math.floor(rest / 256)}.${rest % 256}.${host + 1}`;
}

/** Makes `prefix` (e.g. fd00:70:70::/64) local on lo for the test's duration. Root only. */
export function routeIpv6Prefix(t: ExecutionContext, prefix: string): void {
  execFileSync('ip', ['-6', 'route', 'add', 'local', prefix, 'dev', 'lo']);
  t.teardown(() => {
    try {
      execFileSync('ip', ['-6', 'route', 'del', 'local', prefix, 'dev', 'lo']);
    } catch {
      // already gone
    }
  });
}

/** The i-th address of a /64 given as its first four groups (`fd00:70:70:0`). */
export function ipv6Source(prefix64: string, i: number): string {
  return `${prefix64}:0:0:${Math.floor(i / 65536).toString(16)}:${(i % 65536).toString(16)}`;
}

/** Whether this process may change routes (root with iproute2). */
export function canRoute(): boolean {
  try {
    execFileSync('ip', ['-6', 'route', 'show', 'table', 'local'], { stdio: 'ignore' });
    return process.getuid?.() === 0;
  } catch {
    return false;
  }
}
