/**
 * TCP keepalive on the sockets the relay dials, set once a connection has lived a second rather
 * than the moment it connects.
 *
 * Why: keepalive only matters after `keepalive` seconds (60 by default) of silence, and most relayed
 * connections are over long before that; yet turning it on costs four system calls per socket
 * (libuv sets SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT). Under a connection per
 * request those were four of the five setsockopt calls per connection (strace -c), for a timer
 * that never fired. Accepted sockets need none of this: they inherit keepalive from the listening
 * socket (presetAcceptedOptions in src/platform/native-tcp-path.ts).
 *
 * What it changes: a peer that vanishes without a FIN is found at most one second later than with
 * keepalive set at once (the kernel counts the idle time from the last data either way).
 *
 * One timer per process, armed while ends wait; a closed end is skipped (and holds nothing: TcpEnd
 * drops its owner's callbacks once closed).
 */
import type { TcpEnd } from '../platform/tcp-end.js';

/** How long a dialled connection lives before its keepalive is set. */
export const KEEPALIVE_AFTER_MS = 1000;

let waiting: TcpEnd[] = [];
let delays: number[] = [];
let timer: NodeJS.Timeout | null = null;

/** Turns keepalive on for `end` (first probe after `ms` of silence) within KEEPALIVE_AFTER_MS, if it is still open then. */
export function setKeepAliveLater(end: TcpEnd, ms: number): void {
  waiting.push(end);
  delays.push(ms);
  if (timer !== null) return;
  timer = setTimeout(applyKeepAlive, KEEPALIVE_AFTER_MS);
  // Nothing to do for a process that has nothing else left to run.
  timer.unref();
}

function applyKeepAlive(): void {
  timer = null;
  const ends = waiting;
  const ms = delays;
  waiting = [];
  delays = [];
  for (let i = 0; i < ends.length; i++) {
    const end = ends[i]!;
    if (!end.destroyed) end.setKeepAlive(ms[i]!);
  }
}
