/**
 * The messages between the supervisor and a listener's child process, defined once for both sides.
 *
 * The channel is node's IPC (JSON). Nothing per chunk or per datagram crosses it: the child sends
 * events and counter deltas in batches (`pp:report`, every REPORT_INTERVAL_MS or when a batch is
 * full), and the supervisor sends the rare control messages. The listening socket travels with
 * `pp:start` as a handle, or is a descriptor the child inherited at spawn, named in `pp:start`
 * (see src/supervisor/socket-owner.ts).
 */
import type { ListenerConfig } from '../config/types.js';
import type { LimiterSnapshot } from '../policy/snapshot.js';
import type { StatsDelta } from '../telemetry/stats.js';
import type { WireEvent, WireOrigin } from './wire-events.js';

/**
 * Target address (as written) → 1 up, 0 down: what a child reports with its counters (the
 * packetpony_target_up gauge), and what a new child of the same listener starts from, so a restart
 * or reload does not send clients to a target already found dead.
 */
export type TargetStates = Readonly<Record<string, number>>;

/**
 * 2: connection events travel as tuples (wire-events.ts). 3: pp:start's socket_fd. 4: pp:start's
 * worker and connection_total.
 */
export const PROTOCOL_VERSION = 4;

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
  /**
   * The listening socket's descriptor in the child, inherited at spawn (no handle is sent then);
   * null: the socket comes as the message's handle.
   */
  readonly socket_fd: number | null;
  /**
   * Live reload: prepare everything, answer `pp:prepared`, and start serving only on `pp:begin`,
   * which brings the previous child's limiter state.
   */
  readonly hold: boolean;
  /** Not held: the target states the listener's children last reported (null: none known). */
  readonly target_states: TargetStates | null;
  /** Which of the listener's workers this child is (index from 0), of how many. */
  readonly worker: WorkerPlace;
  /**
   * With several workers: the listener's shared connection total (src/native/connection-total.ts),
   * an inherited descriptor, and this child's slot on it. null: the child counts alone.
   */
  readonly connection_total: { readonly fd: number; readonly slot: number } | null;
}

export interface WorkerPlace {
  readonly index: number;
  readonly count: number;
}

/** Start serving (after a held start), continuing from the previous child's limiter state. */
export interface BeginMessage {
  readonly type: 'pp:begin';
  readonly snapshot: LimiterSnapshot | null;
  /** The target states the replaced child last reported (null: none known). */
  readonly target_states: TargetStates | null;
}

/**
 * Live reload, to the child being replaced: stop accepting now, answer with `pp:handover-state`
 * (the limiter snapshot), then finish open connections within `deadline_ms` and exit 0.
 */
export interface HandoverMessage {
  readonly type: 'pp:handover';
  readonly deadline_ms: number;
}

/** To the new child: connections the previous child still had open have closed. */
export interface ReleaseMessage {
  readonly type: 'pp:release';
  readonly addresses: readonly string[];
  /** The previous child is gone: every connection it had is closed. */
  readonly all: boolean;
}

/** Stop accepting, let open connections finish for up to `deadline_ms`, then exit 0. */
export interface DrainMessage {
  readonly type: 'pp:drain';
  readonly deadline_ms: number;
}

export type SupervisorMessage = StartMessage | DrainMessage | BeginMessage | HandoverMessage | ReleaseMessage;

/** The child is serving on its listening socket. */
export interface ReadyMessage {
  readonly type: 'pp:ready';
  readonly address: { readonly address: string; readonly port: number; readonly family: string };
}

/** Events (connection events as tuples: wire-events.ts, whose origin fields it carries) and counters. */
export interface ReportMessage extends WireOrigin {
  readonly type: 'pp:report';
  readonly events: readonly WireEvent[];
  readonly stats: StatsDelta;
  /** Events the child had to discard because the channel was backed up. */
  readonly dropped_events: number;
}

/** A held child is ready to begin. */
export interface PreparedMessage {
  readonly type: 'pp:prepared';
}

/** The replaced child has stopped accepting; its limiter state for the successor. */
export interface HandoverStateMessage {
  readonly type: 'pp:handover-state';
  readonly snapshot: LimiterSnapshot | null;
}

/** The child cannot go on; it exits right after sending this. */
export interface FatalMessage {
  readonly type: 'pp:fatal';
  readonly code: string;
  readonly message: string;
}

export type ChildMessage = ReadyMessage | ReportMessage | FatalMessage | PreparedMessage | HandoverStateMessage;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

export type { LimiterSnapshot } from '../policy/snapshot.js';

/**
 * The limiter states of several workers as one, for a reload that changes which worker serves an
 * address (the workers' number or the address changed): every new worker starts from all of
 * them. Each address is served by one worker, so their lists do not overlap.
 */
export function mergeSnapshots(snapshots: ReadonlyArray<LimiterSnapshot | null>): LimiterSnapshot | null {
  const present = snapshots.filter((s): s is LimiterSnapshot => s !== null);
  if (present.length <= 1) return present[0] ?? null;
  return {
    version: 1,
    addresses: present.flatMap((s) => s.addresses),
    untracked_open: present.reduce((sum, s) => sum + s.untracked_open, 0),
  };
}

/** null, or an object of 0s and 1s. */
export function isTargetStates(value: unknown): value is TargetStates | null {
  return value === null || (isObject(value) && Object.values(value).every((v) => v === 0 || v === 1));
}

function isWorkerPlace(value: unknown): value is WorkerPlace {
  return isObject(value) && Number.isInteger(value.index) && Number.isInteger(value.count) && (value.index as number) >= 0 && (value.index as number) < (value.count as number);
}

function isConnectionTotal(value: unknown): boolean {
  return isObject(value) && Number.isInteger(value.fd) && (value.fd as number) > 2 && Number.isInteger(value.slot) && (value.slot as number) >= 0;
}

/** Type guards: anything arriving over IPC is checked before use; unknown types are ignored. */
export function isSupervisorMessage(value: unknown): value is SupervisorMessage {
  if (!isObject(value)) return false;
  switch (value.type) {
    case 'pp:start':
      return (
        value.v === PROTOCOL_VERSION && isObject(value.config) && typeof value.hold === 'boolean' && isTargetStates(value.target_states) &&
        (value.socket_fd === null || (Number.isInteger(value.socket_fd) && (value.socket_fd as number) > 2)) &&
        isWorkerPlace(value.worker) && (value.connection_total === null || isConnectionTotal(value.connection_total))
      );
    case 'pp:drain':
    case 'pp:handover':
      return typeof value.deadline_ms === 'number';
    case 'pp:begin':
      return (value.snapshot === null || isObject(value.snapshot)) && isTargetStates(value.target_states);
    case 'pp:release':
      return Array.isArray(value.addresses) && typeof value.all === 'boolean';
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
      return Array.isArray(value.events) && isObject(value.stats) && typeof value.dropped_events === 'number' &&
        typeof value.t0 === 'number' && typeof value.listener_name === 'string' && typeof value.protocol === 'string';
    case 'pp:fatal':
      return typeof value.code === 'string' && typeof value.message === 'string';
    case 'pp:prepared':
      return true;
    case 'pp:handover-state':
      return value.snapshot === null || isObject(value.snapshot);
    default:
      return false;
  }
}
