/**
 * Event shapes shared by the child (which produces them) and the supervisor (which writes them to
 * the log sinks). Plain data: they cross the IPC channel as JSON, in batches.
 *
 * Direction convention everywhere: `bytes_sent` / `packets_sent` count client → target,
 * `bytes_received` / `packets_received` count target → client.
 */
import type { LimitAction, Protocol } from '../config/types.js';
import type { PolicyReason } from '../policy/verdict.js';

/** `error`: the connection could not be made (e.g. the target refused it); `error` says why. */
export type ConnectionEventType = 'open' | 'update' | 'close' | 'error';

/** Why a connection, session or datagram was refused. Doubles as a metrics label value. */
export type DenyReason =
  | PolicyReason
  /** A UDP listener's session cap is reached: the relay's refusal, not the policy's. */
  | 'session_limit';

export interface ConnectionEvent {
  readonly kind: 'connection';
  readonly event_type: ConnectionEventType;
  /** Milliseconds since the epoch. */
  readonly timestamp: number;
  readonly listener_name: string;
  readonly protocol: Protocol;
  readonly source_ip: string;
  readonly source_port: number;
  readonly target_ip: string;
  readonly target_port: number;
  readonly bytes_sent: number;
  readonly bytes_received: number;
  /** UDP only. */
  readonly packets_sent?: number;
  readonly packets_received?: number;
  readonly duration_ms: number;
  readonly error?: string;
}

/** A refusal (or, with log_only, a violation let through). Aggregated per source by the producer. */
export interface DenyEvent {
  readonly kind: 'deny';
  readonly event_type: 'deny';
  readonly timestamp: number;
  readonly listener_name: string;
  readonly protocol: Protocol;
  readonly source_ip: string;
  readonly source_port: number;
  readonly reason: DenyReason;
  readonly action: LimitAction | 'deny';
  /** How many refusals this event stands for (aggregation); 1 when not aggregated. */
  readonly count: number;
}

export type LogLevel = 'error' | 'warning' | 'notice' | 'info' | 'debug';

/** A free-form message: daemon lifecycle, errors without a connection, warnings. */
export interface MessageEvent {
  readonly kind: 'message';
  readonly timestamp: number;
  readonly level: LogLevel;
  readonly message: string;
  readonly fields?: Readonly<Record<string, string | number | boolean>>;
}

export type LogEvent = ConnectionEvent | DenyEvent | MessageEvent;
