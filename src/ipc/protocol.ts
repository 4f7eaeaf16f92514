/**
 * The messages between the supervisor and a listener's child process, defined once for both sides.
 *
 * The channel is node's IPC (JSON). Nothing per chunk or per datagram crosses it: the child sends
 * events and counter deltas in batches (`pp:report`, every REPORT_INTERVAL_MS or when a batch is
 * full), and the supervisor sends the rare control messages. The listening socket travels with
 * `pp:start` as a handle (see src/supervisor/socket-owner.ts).
 */
import type { ListenerConfig } from '../config/types.js';
import type { LogEvent } from '../telemetry/events.js';
import type { StatsDelta } from '../telemetry/stats.js';

export const PROTOCOL_VERSION = 1;

/** How often a child reports counters and events. */
export const REPORT_INTERVAL_MS = 200;
/** A child sends its batch early once this many events are waiting. */
export const REPORT_BATCH_EVENTS = 500;

/** Exit status of a child that cannot work with what it was given; restarting will not help. */
export const EXIT_CHILD_CONFIG = 78; // EX_CONFIG, as sysexits.h

export interface StartMessage {
  readonly type: 'pp:start';
  readonly v: number;
  readonly config: ListenerConfig;
  /** The family of the socket sent along (a `:port` UDP listener may fall back to IPv4). */
  readonly socket_family: 'IPv4' | 'IPv6';
}

/** Stop accepting, let open connections finish for up to `deadline_ms`, then exit 0. */
export interface DrainMessage {
  readonly type: 'pp:drain';
  readonly deadline_ms: number;
}

export type SupervisorMessage = StartMessage | DrainMessage;

/** The child is serving on its listening socket. */
export interface ReadyMessage {
  readonly type: 'pp:ready';
  readonly address: { readonly address: string; readonly port: number; readonly family: string };
}

export interface ReportMessage {
  readonly type: 'pp:report';
  readonly events: readonly LogEvent[];
  readonly stats: StatsDelta;
  /** Events the child had to discard because the channel was backed up. */
  readonly dropped_events: number;
}

/** The child cannot go on; it exits right after sending this. */
export interface FatalMessage {
  readonly type: 'pp:fatal';
  readonly code: string;
  readonly message: string;
}

export type ChildMessage = ReadyMessage | ReportMessage | FatalMessage;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

/** Type guards: anything arriving over IPC is checked before use; unknown types are ignored. */
export function isSupervisorMessage(value: unknown): value is SupervisorMessage {
  if (!isObject(value)) return false;
  switch (value.type) {
    case 'pp:start':
      return value.v === PROTOCOL_VERSION && isObject(value.config);
    case 'pp:drain':
      return typeof value.deadline_ms === 'number';
    default:
      return false;
  }
}

export function isChildMessage(value: unknown): value is ChildMessage {
  if (!isObject(value)) return false;
  switch (value.type) {
    case 'pp:ready':
      return isObject(value.address);
    case 'pp:report':
      return Array.isArray(value.events) && isObject(value.stats) && typeof value.dropped_events === 'number';
    case 'pp:fatal':
      return typeof value.code === 'string' && typeof value.message === 'string';
    default:
      return false;
  }
}
