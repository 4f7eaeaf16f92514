/**
 * How the TCP relay names what went wrong: the stats' error type of a socket error, and the
 * close event's words for it (the same for both sides and for every dial).
 */
import type { ErrorType } from '../telemetry/stats.js';

/** The error a reset reported as an end of stream stands for (see Relay's end handlers). */
export function resetError(): NodeJS.ErrnoException {
  return Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET', syscall: 'read' });
}

export function errorTypeOf(side: 'client' | 'target', err: NodeJS.ErrnoException): ErrorType {
  const writing = err.syscall === 'write' || err.syscall === 'writev' || err.syscall === 'shutdown';
  if (side === 'client') return writing ? 'client_write' : 'client_read';
  return writing ? 'target_write' : 'target_read';
}

const ERROR_TEXT: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset by peer',
  ECONNABORTED: 'connection aborted',
  EPIPE: 'broken pipe (the peer closed its end)',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'no route to host',
  ENETUNREACH: 'network unreachable',
  EADDRNOTAVAIL: 'address not available',
};

export function describeError(err: NodeJS.ErrnoException): string {
  const code = err.code;
  if (code === undefined) return err.message;
  const text = ERROR_TEXT[code];
  return text === undefined ? err.message : `${text} (${code})`;
}

export function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
