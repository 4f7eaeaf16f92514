/**
 * How events look in each sink: SPEC.md's text lines for stdout, one JSON object per line for the
 * JSON file (and stdout with use_json), and the key=value body for syslog. Field names and order
 * are the original's, so existing log parsers keep working.
 */
import { formatEndpoint } from '../config/address.js';
import type { ConnectionEvent, DenyEvent, LogEvent, MessageEvent } from './events.js';

function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

// Events come in bursts within the same second: the last second's text is kept.
let stampSecond = Number.NaN;
let stampText = '';

/** `2026-01-07 10:38:44`, local time, as the original's text lines. */
export function textTimestamp(ms: number): string {
  const second = Math.floor(ms / 1000);
  if (second === stampSecond) return stampText;
  const d = new Date(ms);
  stampSecond = second;
  stampText = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return stampText;
}

const VERBS: Readonly<Record<ConnectionEvent['event_type'], string>> = {
  open: 'Connection opened',
  update: 'Connection update',
  close: 'Connection closed',
  error: 'Connection failed',
};

function quote(value: string): string {
  return JSON.stringify(value);
}

function fieldValue(value: string | number | boolean): string {
  return typeof value === 'string' && (value === '' || /[\s"=]/.test(value)) ? quote(value) : String(value);
}

function connectionTail(event: ConnectionEvent): string {
  let line = `listener=${event.listener_name} protocol=${event.protocol} src=${formatEndpoint(event.source_ip, event.source_port)} dst=${formatEndpoint(event.target_ip, event.target_port)}`;
  if (event.event_type === 'close' || event.event_type === 'update') {
    line += ` duration=${Math.round(event.duration_ms)}ms bytes_sent=${event.bytes_sent} bytes_recv=${event.bytes_received}`;
    if (event.packets_sent !== undefined) line += ` pkts_sent=${event.packets_sent} pkts_recv=${event.packets_received ?? 0}`;
  }
  if (event.error !== undefined) line += ` error=${quote(event.error)}`;
  return line;
}

function denyTail(event: DenyEvent): string {
  let line = `listener=${event.listener_name} protocol=${event.protocol} src=${formatEndpoint(event.source_ip, event.source_port)} reason=${event.reason} action=${event.action}`;
  if (event.count > 1) line += ` count=${event.count}`;
  return line;
}

function messageTail(event: MessageEvent): string {
  let line = event.message;
  for (const [key, value] of Object.entries(event.fields ?? {})) line += ` ${key}=${fieldValue(value)}`;
  return line;
}

/** A violation that was let through: log_only, or a throttled (slowed, not refused) transfer. */
function letThrough(event: DenyEvent): boolean {
  return event.action === 'log_only' || (event.action === 'throttle' && event.reason === 'bandwidth_limit');
}

/** One stdout text line, without the newline. */
export function formatText(event: LogEvent): string {
  const stamp = `[${textTimestamp(event.timestamp)}]`;
  switch (event.kind) {
    case 'connection':
      return `${stamp} ${VERBS[event.event_type]}: ${connectionTail(event)}`;
    case 'deny':
      return `${stamp} ${letThrough(event) ? 'Limit exceeded' : 'Connection denied'}: ${denyTail(event)}`;
    case 'message':
      return `${stamp} [${event.level.toUpperCase()}] ${messageTail(event)}`;
  }
}

/** One JSON object, without the newline. Keys in the original's order. */
export function formatJson(event: LogEvent): string {
  const timestamp = new Date(event.timestamp).toISOString();
  switch (event.kind) {
    case 'connection': {
      const out: Record<string, unknown> = {
        timestamp,
        listener_name: event.listener_name,
        protocol: event.protocol,
        source_ip: event.source_ip,
        source_port: event.source_port,
        target_ip: event.target_ip,
        target_port: event.target_port,
        event_type: event.event_type,
        bytes_sent: event.bytes_sent,
        bytes_received: event.bytes_received,
      };
      if (event.packets_sent !== undefined) {
        out.packets_sent = event.packets_sent;
        out.packets_received = event.packets_received ?? 0;
      }
      out.duration_ms = Math.round(event.duration_ms);
      if (event.error !== undefined) out.error = event.error;
      return JSON.stringify(out);
    }
    case 'deny':
      return JSON.stringify({
        timestamp,
        listener_name: event.listener_name,
        protocol: event.protocol,
        source_ip: event.source_ip,
        source_port: event.source_port,
        event_type: 'deny',
        reason: event.reason,
        action: event.action,
        count: event.count,
      });
    case 'message':
      return JSON.stringify({ timestamp, level: event.level, message: event.message, ...event.fields });
  }
}

/** The syslog message body (the header — facility, severity, tag — is the sink's business). */
export function formatSyslogBody(event: LogEvent): string {
  switch (event.kind) {
    case 'connection': {
      let body = `listener=${event.listener_name} proto=${event.protocol} event=${event.event_type} src=${formatEndpoint(event.source_ip, event.source_port)} dst=${formatEndpoint(event.target_ip, event.target_port)}`;
      if (event.event_type === 'close' || event.event_type === 'update') {
        body += ` duration=${Math.round(event.duration_ms)}ms bytes_sent=${event.bytes_sent} bytes_recv=${event.bytes_received}`;
        if (event.packets_sent !== undefined) body += ` pkts_sent=${event.packets_sent} pkts_recv=${event.packets_received ?? 0}`;
      }
      if (event.error !== undefined) body += ` error=${quote(event.error)}`;
      return body;
    }
    case 'deny':
      return `listener=${event.listener_name} proto=${event.protocol} event=deny src=${formatEndpoint(event.source_ip, event.source_port)} reason=${event.reason} action=${event.action}${event.count > 1 ? ` count=${event.count}` : ''}`;
    case 'message':
      return messageTail(event);
  }
}
