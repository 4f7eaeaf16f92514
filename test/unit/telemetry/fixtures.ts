/** Events and a recording sink context for the telemetry unit tests. */
import type { ConnectionEvent, DenyEvent, MessageEvent } from '../../../src/telemetry/events.js';
import type { LogLevel } from '../../../src/telemetry/events.js';
import type { SinkContext } from '../../../src/telemetry/logger.js';

/** 2026-01-07 10:38:44.123 local time. */
export const WHEN = new Date(2026, 0, 7, 10, 38, 44, 123).getTime();

export function tcpClose(overrides: Partial<ConnectionEvent> = {}): ConnectionEvent {
  return {
    kind: 'connection',
    event_type: 'close',
    timestamp: WHEN,
    listener_name: 'web',
    protocol: 'tcp',
    source_ip: '192.168.1.50',
    source_port: 12345,
    target_ip: '192.168.1.100',
    target_port: 80,
    bytes_sent: 1024,
    bytes_received: 4096,
    duration_ms: 5230,
    ...overrides,
  };
}

export function udpUpdate(overrides: Partial<ConnectionEvent> = {}): ConnectionEvent {
  return tcpClose({ protocol: 'udp', event_type: 'update', listener_name: 'dns', packets_sent: 3, packets_received: 2, ...overrides });
}

export function deny(overrides: Partial<DenyEvent> = {}): DenyEvent {
  return {
    kind: 'deny',
    event_type: 'deny',
    timestamp: WHEN,
    listener_name: 'web',
    protocol: 'tcp',
    source_ip: '203.0.113.9',
    source_port: 4000,
    reason: 'connection_limit',
    action: 'drop',
    count: 1,
    ...overrides,
  };
}

export function message(text: string, level: LogLevel = 'info', fields?: MessageEvent['fields']): MessageEvent {
  return { kind: 'message', timestamp: WHEN, level, message: text, ...(fields ? { fields } : {}) };
}

export interface RecordingContext extends SinkContext {
  readonly drops: Map<string, number>;
  readonly reports: Array<{ sink: string; level: LogLevel; message: string }>;
}

export function recordingContext(): RecordingContext {
  const drops = new Map<string, number>();
  const reports: RecordingContext['reports'] = [];
  return {
    drops,
    reports,
    dropped: (sink, count) => drops.set(sink, (drops.get(sink) ?? 0) + count),
    report: (sink, level, text) => reports.push({ sink, level, message: text }),
  };
}
