/**
 * Connection events as they cross the IPC channel: a tuple of values, not an object.
 *
 * Why: a busy child sends two connection events per connection (open and close; UDP sessions
 * likewise), and node's IPC turns every message into JSON. As objects, the keys were most of that
 * JSON, and JSON.stringify was a sixth of a child's user-space instructions under a connection per
 * request (callgrind: ~15 k per connection, of ~90 k). As a tuple, a connection event is its values
 * only; the listener's name and protocol, the same for every event of a child, travel once per
 * report, and the timestamp as an offset from the report's `t0` (a small integer, where an epoch
 * in ms is a double for JSON to print). Deny and message events are rare and stay objects.
 *
 * Layout: [type, dt, source_ip, source_port, target_ip, target_port, bytes_sent, bytes_received,
 * duration_ms] and, only when one of them is there, [error or null, packets_sent, packets_received]
 * (-1 for packets a TCP event does not have). `type` indexes CONNECTION_EVENT_TYPES.
 */
import type { Protocol } from '../config/types.js';
import type { ConnectionEvent, ConnectionEventType, LogEvent } from '../telemetry/events.js';

export const CONNECTION_EVENT_TYPES: readonly ConnectionEventType[] = ['open', 'update', 'close', 'error'];

export type WireConnection = readonly (string | number | null)[];

/** What a report carries: events, with connection events as tuples. */
export type WireEvent = LogEvent | WireConnection;

/** What every event of one report shares. */
export interface WireOrigin {
  readonly listener_name: string;
  readonly protocol: Protocol;
  /** Connection tuples' timestamps are offsets from this (ms since the epoch). */
  readonly t0: number;
}

/** The wire form of a connection event, its timestamp counted from `t0`. */
export function encodeConnection(event: ConnectionEvent, t0: number): WireConnection {
  const tuple: Array<string | number | null> = [
    CONNECTION_EVENT_TYPES.indexOf(event.event_type),
    event.timestamp - t0,
    event.source_ip,
    event.source_port,
    event.target_ip,
    event.target_port,
    event.bytes_sent,
    event.bytes_received,
    event.duration_ms,
  ];
  if (event.error !== undefined || event.packets_sent !== undefined) {
    tuple.push(event.error ?? null, event.packets_sent ?? -1, event.packets_received ?? -1);
  }
  return tuple;
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function count(value: unknown): number {
  return typeof value === 'number' ? value : 0;
}

/**
 * The event a report's entry stands for. A tuple's values are checked for their type (a wrong one
 * becomes '' or 0): whatever a child sends, the supervisor's formatters get strings and numbers.
 */
export function decodeEvent(event: WireEvent, origin: WireOrigin): LogEvent {
  if (!Array.isArray(event)) return event as LogEvent;
  const tuple = event as WireConnection;
  const decoded: { -readonly [K in keyof ConnectionEvent]: ConnectionEvent[K] } = {
    kind: 'connection',
    event_type: CONNECTION_EVENT_TYPES[count(tuple[0])] ?? 'update',
    timestamp: origin.t0 + count(tuple[1]),
    listener_name: origin.listener_name,
    protocol: origin.protocol,
    source_ip: text(tuple[2]),
    source_port: count(tuple[3]),
    target_ip: text(tuple[4]),
    target_port: count(tuple[5]),
    bytes_sent: count(tuple[6]),
    bytes_received: count(tuple[7]),
    duration_ms: count(tuple[8]),
  };
  if (tuple.length > 9) {
    if (typeof tuple[9] === 'string') decoded.error = tuple[9];
    const packets = tuple[10];
    if (typeof packets === 'number' && packets >= 0) {
      decoded.packets_sent = packets;
      decoded.packets_received = count(tuple[11]);
    }
  }
  return decoded;
}
