/**
 * Syslog messages in the BSD format (RFC 3164) that syslog daemons on Linux expect:
 *
 *   <PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: BODY     over udp and tcp (syslog-client adds the header)
 *   <PRI>Mmm dd hh:mm:ss TAG[PID]: BODY              on the local socket, as glibc's syslog(3) sends
 *
 * The local form has no host name: journald and rsyslog take the word after the time as the tag.
 * PRI is facility daemon (3) × 8 + the event's severity. The body is format.ts's key=value text.
 */
import type { LogEvent } from '../events.js';
import { formatSyslogBody } from '../format.js';
import { SEVERITY_ORDER, type Severity } from '../logger.js';

export const FACILITY_DAEMON = 3;
/** Longer bodies are cut: syslog daemons truncate or reject them anyway (rsyslog's default is 8k). */
export const MAX_BODY_CHARS = 4096;

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** The numeric severity: 0 (emerg) to 7 (debug). */
export function severityCode(severity: Severity): number {
  return SEVERITY_ORDER.indexOf(severity);
}

export function priority(severity: Severity): number {
  return FACILITY_DAEMON * 8 + severityCode(severity);
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** `Jan  7 10:38:44`: local time, the day padded with a space, as RFC 3164 has it. */
export function rfc3164Timestamp(ms: number): string {
  const d = new Date(ms);
  const day = d.getDate();
  return `${MONTHS[d.getMonth()]} ${day < 10 ? ` ${day}` : day} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/**
 * The body on one line: a newline would split the message in two on a TCP stream (framed by
 * newlines) and in the daemon's files, so control characters become spaces.
 */
export function syslogBody(event: LogEvent): string {
  const body = formatSyslogBody(event).replace(/[\u0000-\u001f\u007f]/g, ' ');
  return body.length > MAX_BODY_CHARS ? `${body.slice(0, MAX_BODY_CHARS - 1)}…` : body;
}

/** `TAG[PID]: BODY`, the part after the header. */
export function taggedBody(tag: string, pid: number, event: LogEvent): string {
  return `${tag}[${pid}]: ${syslogBody(event)}`;
}

/** A whole datagram for the local socket. */
export function localDatagram(tag: string, pid: number, event: LogEvent, severity: Severity): Buffer {
  return Buffer.from(`<${priority(severity)}>${rfc3164Timestamp(event.timestamp)} ${taggedBody(tag, pid, event)}`);
}
