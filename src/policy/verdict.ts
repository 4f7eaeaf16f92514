/**
 * What the policy answers. Refusing a client is an outcome, not an error: it comes back as data
 * whose `reason` doubles as the metrics label and the deny event's reason.
 */
import type { Ticket } from './ticket.js';

/** The limits a RateLimiter enforces. */
export type LimitReason = 'connection_limit' | 'attempt_limit' | 'bandwidth_limit' | 'total_limit';

/**
 * Every reason a listener's policy may refuse a new connection or UDP session for: `acl` (not in
 * the allowlist), `denylist`, a limit, or `store_down` (a shared listener with
 * shared_limits.on_store_down: closed while its store is unreachable). Telemetry's DenyReason
 * builds on these.
 */
export type PolicyReason = LimitReason | 'acl' | 'denylist' | 'store_down';

export interface Refusal<R extends PolicyReason = PolicyReason> {
  readonly allow: false;
  readonly reason: R;
}

/** An allowing verdict is the Ticket itself (`allow: true`), so admitting allocates one object. */
export type Verdict<R extends PolicyReason = PolicyReason> = Ticket | Refusal<R>;

function refusal<R extends PolicyReason>(reason: R): Refusal<R> {
  return Object.freeze({ allow: false, reason });
}

/** Shared, frozen refusals: refusing a flood allocates nothing. */
export const REFUSED: { readonly [R in PolicyReason]: Refusal<R> } = Object.freeze({
  acl: refusal('acl'),
  denylist: refusal('denylist'),
  connection_limit: refusal('connection_limit'),
  attempt_limit: refusal('attempt_limit'),
  bandwidth_limit: refusal('bandwidth_limit'),
  total_limit: refusal('total_limit'),
  store_down: refusal('store_down'),
});

/*
 * What `consume()` returns for a chunk or datagram. Plain numbers rather than objects, because it
 * runs per chunk: a positive value is a pause in ms (throttle: the bytes are accounted, read no more
 * from this connection until the pause is over).
 */

/** Go on. */
export const CONSUME_OK = 0;
/**
 * Over the bandwidth cap. The bytes were not counted: end the transfer (TCP, action drop) or drop
 * the datagram (UDP: action drop, or a throttled address that is ahead of its pace).
 */
export const CONSUME_DROP = -1;
/**
 * Go on, and log a `bandwidth_limit` violation with the listener's action (log_only; throttle while
 * pacing). Returned at most once per address per bandwidth window; a throttled stream's pause is
 * then folded into the next call's answer.
 */
export const CONSUME_VIOLATION = -2;

/**
 * A throttled connection's read sizer: given the room in the buffer the next read lands in and what
 * it granted that reader last time (given back: that read has been metered), the bytes this read
 * may take. Room 0 gives the last grant back for good.
 */
export type ReadLimit = (room: number, previous: number) => number;
