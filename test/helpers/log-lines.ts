/** Reading the daemon's stdout text lines (SPEC.md "Stdout Logging") in tests. */
import type { Daemon } from './daemon.js';
import { waitFor } from './wait-for.js';

/** The value of `key=value` in a log line (unquoted values), or undefined. */
export function field(line: string, key: string): string | undefined {
  return new RegExp(`(?:^|\\s)${key}=(\\S+)`).exec(line)?.[1];
}

/** A numeric field; throws if it is missing, so a changed log format fails loudly. */
export function numberField(line: string, key: string): number {
  const value = field(line, key);
  if (value === undefined) throw new Error(`no ${key}= in: ${line}`);
  return Number.parseInt(value, 10);
}

/** The source port of a connection or deny line (`src=IP:PORT` or `src=[IPv6]:PORT`). */
export function sourcePort(line: string): number {
  const src = field(line, 'src');
  if (src === undefined) throw new Error(`no src= in: ${line}`);
  return Number(src.slice(src.lastIndexOf(':') + 1));
}

/** Connection event lines of one listener: kind is opened, update, closed or failed. */
export function connectionLines(daemon: Daemon, kind: 'opened' | 'update' | 'closed' | 'failed', listener: string, port?: number): string[] {
  const verb = kind === 'update' ? 'Connection update' : `Connection ${kind}`;
  return daemon.lines.filter(
    (l) => l.includes(`] ${verb}: listener=${listener} `) && (port === undefined || sourcePort(l) === port),
  );
}

/** Waits until at least `count` lines of that kind exist, and returns them all. */
export function waitForConnectionLines(
  daemon: Daemon,
  kind: 'opened' | 'update' | 'closed' | 'failed',
  listener: string,
  count: number,
  port?: number,
  timeoutMs = 10_000,
): Promise<string[]> {
  return waitFor(
    () => {
      const lines = connectionLines(daemon, kind, listener, port);
      return lines.length >= count ? lines : undefined;
    },
    `${count} "${kind}" line(s) of listener ${listener}${port === undefined ? '' : ` from port ${port}`}; so far:\n${daemon.lines.join('\n')}`,
    timeoutMs,
  );
}

/**
 * Deny / violation lines of one listener and reason ("Connection denied: …" or, for log_only,
 * "Limit exceeded: …"), optionally from one source address.
 */
export function denyLines(daemon: Daemon, listener: string, reason: string, ip?: string): string[] {
  return daemon.lines.filter(
    (l) =>
      /\] (Connection denied|Limit exceeded): /.test(l) &&
      l.includes(`listener=${listener} `) &&
      field(l, 'reason') === reason &&
      (ip === undefined || field(l, 'src')?.startsWith(ip.includes(':') ? `[${ip}]:` : `${ip}:`) === true),
  );
}

export function waitForDeny(daemon: Daemon, listener: string, reason: string, ip?: string, timeoutMs = 10_000): Promise<string> {
  return waitFor(
    () => denyLines(daemon, listener, reason, ip)[0],
    `a ${reason} deny line of listener ${listener}${ip === undefined ? '' : ` for ${ip}`}; so far:\n${daemon.lines.join('\n')}`,
    timeoutMs,
  );
}

/** How many refusals the deny lines stand for: 1 per line, or its count=N. */
export function refusalsIn(lines: readonly string[]): number {
  return lines.reduce((sum, l) => sum + (field(l, 'count') === undefined ? 1 : numberField(l, 'count')), 0);
}
