/**
 * What the caller of a UDP relay (udp-relay.ts, whose header says the rules) gives it: the
 * options, the hooks through which the policy and the logs take part, and the per-session plan.
 */
import type dgram from 'node:dgram';
import type { Endpoint, UdpSettings } from '../config/types.js';
import type { ConnectionEvent } from '../telemetry/events.js';
import type { ErrorType, ListenerStats } from '../telemetry/stats.js';
import type { TargetResolver } from './target-resolver.js';
import type { UdpDirection } from './udp-path.js';

/** Why the relay itself dropped a datagram. */
export type UdpDropReason = 'session_limit' | 'oversize_datagram' | 'session_create' | 'no_target';

/** The caller's choices for a new session (see udp-relay.ts's header). */
export interface UdpSessionPlan {
  /** Where the session's upstream socket connects; null: the relay's own target. */
  readonly target: { readonly ip: string; readonly port: number; readonly family: 4 | 6 } | null;
  /** Prepended to every datagram the session sends to the target; null: nothing. */
  readonly header: Buffer | null;
}

/** What `admit` answers; the policy's Verdict (a Ticket or a Refusal) is one. */
export interface UdpAdmission {
  readonly allow: boolean;
}

export interface UdpRelayHooks<A extends UdpAdmission = UdpAdmission> {
  /**
   * A datagram from `clientIp` (IPv4-mapped addresses given as IPv4) would open a new session.
   * `allow: false` drops it and opens nothing. Asked again for each datagram of a refused client.
   */
  readonly admit?: (clientIp: string, clientPort: number) => A;
  /** Per datagram, both ways, before forwarding; see udp-relay.ts's header for the answers. */
  readonly meter?: (admission: A, bytes: number, direction: UdpDirection, clientPort: number) => number;
  /** The session of an admitted client ended (or could not be opened after all). */
  readonly release?: (admission: A) => void;
  /** An open, update or close event that passed the logging thresholds. */
  readonly onEvent?: (event: ConnectionEvent) => void;
  /** A datagram the relay dropped (the caller aggregates these for its logs). */
  readonly onDrop?: (reason: UdpDropReason, clientIp: string, clientPort: number, direction: UdpDirection) => void;
  /** An error counted in stats; `clientIp` is undefined when no client is concerned. */
  readonly onError?: (type: ErrorType, error: Error, clientIp: string | undefined, clientPort: number) => void;
  /**
   * Asked after `admit` and the session cap for a new session; undefined drops the datagram
   * (reported through onDrop as 'no_target', for the hook to count).
   */
  readonly plan?: (clientIp: string, clientPort: number) => UdpSessionPlan | undefined;
  /** A planned session ended; gets back the plan object `plan` returned. */
  readonly planEnded?: (plan: UdpSessionPlan) => void;
}

export interface UdpRelayOptions<A extends UdpAdmission = UdpAdmission> {
  /** For the events' listener_name. */
  readonly listenerName: string;
  /** The bound listening socket; the caller keeps owning it. */
  readonly socket: dgram.Socket;
  /** null: every session's target comes from the `plan` hook. */
  readonly target: Endpoint | null;
  readonly udp: UdpSettings;
  readonly stats: ListenerStats;
  /** The listener's max_total_connections when set (> 0); DEFAULT_MAX_SESSIONS (udp-relay.ts) otherwise. */
  readonly maxSessions?: number;
  readonly hooks?: UdpRelayHooks<A>;
  /** Defaults to the process-wide cache. */
  readonly resolver?: TargetResolver;
  readonly resolveIntervalMs?: number;
  /** Monotonic milliseconds; defaults to performance.now(). */
  readonly clock?: () => number;
  /** Overrides the sweep period derived from the timeouts (tests). */
  readonly sweepIntervalMs?: number;
  /**
   * true: the batched path (start() rejects if the addon is not there); false: Node's path;
   * undefined (production): batched where the addon is built, Node's otherwise.
   */
  readonly batched?: boolean;
}
