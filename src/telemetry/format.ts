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

let isoSecond = Number.NaN;
let isoPrefix = '';

/**
 * `2026-01-07T09:38:44.123Z`, as Date#toISOString writes it. Everything up to the seconds is kept
 * from the last call: a Date and its formatting per event cost more than the rest of the line.
 */
function isoTimestamp(ms: number): string {
  const whole = Math.floor(ms);
  const second = Math.floor(whole / 1000);
  if (second !== isoSecond) {
    const iso = new Date(second * 1000).toISOString();
    // Years outside 0000–9999 are written another way: not cached.
    if (iso.length !== 24) return new Date(ms).toISOString();
    isoSecond = second;
    isoPrefix = iso.slice(0, 20);
  }
  const millis = whole - second * 1000;
  return `${isoPrefix}${millis < 10 ? '00' : millis < 100 ? '0' : ''}${millis}Z`;
}

/**
 * A JSON string, or null for a value that is not a string (a malformed event stays valid JSON).
 * Names, addresses and event types have nothing to escape: they are quoted as they are, and only
 * a string with a control character, a quote, a backslash or anything past ASCII goes through
 * JSON.stringify (the same text either way, at a fraction of the cost: five strings a line).
 */
function jsonString(value: unknown): string {
  if (typeof value !== 'string') return 'null';
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || c > 0x7e) return JSON.stringify(value);
  }
  return `"${value}"`;
}

/** A JSON number, or null where JSON has none (NaN, Infinity, not a number), as JSON.stringify does. */
function jsonNumber(value: unknown): string {
  return typeof value === 'number' && Number.isFinite(value) ? String(value) : 'null';
}

/**
 * One JSON object, without the newline, keys in the original's order. Connection and deny lines are written out
 * directly: an object built per event and JSON.stringify took ~22,000 instructions an event
 * (callgrind), the largest part of what the JSON log cost the supervisor per connection.
 */
export function formatJson(event: LogEvent): string {
  const timestamp = isoTimestamp(event.timestamp);
  switch (event.kind) {
    case 'connection': {
      let line = `{"timestamp":"${timestamp}","listener_name":${jsonString(event.listener_name)},"protocol":${jsonString(event.protocol)}` +
        `,"source_ip":${jsonString(event.source_ip)},"source_port":${jsonNumber(event.source_port)}` +
        `,"target_ip":${jsonString(event.target_ip)},"target_port":${jsonNumber(event.target_port)}` +
        `,"event_type":${jsonString(event.event_type)},"bytes_sent":${jsonNumber(event.bytes_sent)},"bytes_received":${jsonNumber(event.bytes_received)}`;
      if (event.packets_sent !== undefined) {
        line += `,"packets_sent":${jsonNumber(event.packets_sent)},"packets_received":${jsonNumber(event.packets_received ?? 0)}`;
      }
      line += `,"duration_ms":${jsonNumber(Math.round(event.duration_ms))}`;
      if (event.error !== undefined) line += `,"error":${jsonString(event.error)}`;
      return `${line}}`;
    }
    case 'deny':
      return `{"timestamp":"${timestamp}","listener_name":${jsonString(event.listener_name)},"protocol":${jsonString(event.protocol)}` +
        `,"source_ip":${jsonString(event.source_ip)},"source_port":${jsonNumber(event.source_port)},"event_type":"deny"` +
        `,"reason":${jsonString(event.reason)},"action":${jsonString(event.action)},"count":${jsonNumber(event.count)}}`;
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
