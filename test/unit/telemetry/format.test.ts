/** The log formats are a compatibility contract: field names, order and spelling are the original's. */
import test from 'ava';
import { formatJson, formatSyslogBody, formatText } from '../../../src/telemetry/format.js';
import { deny, message, tcpClose, udpUpdate } from './fixtures.js';

test('a TCP close event as JSON: the original fields, in order', (t) => {
  const line = formatJson(tcpClose());
  t.deepEqual(Object.keys(JSON.parse(line) as object), [
    'timestamp', 'listener_name', 'protocol', 'source_ip', 'source_port', 'target_ip', 'target_port',
    'event_type', 'bytes_sent', 'bytes_received', 'duration_ms',
  ]);
  t.regex(line, /^\{"timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.123Z","listener_name":"web","protocol":"tcp","source_ip":"192\.168\.1\.50","source_port":12345,"target_ip":"192\.168\.1\.100","target_port":80,"event_type":"close","bytes_sent":1024,"bytes_received":4096,"duration_ms":5230\}$/);
});

test('UDP events add packets_sent and packets_received before duration_ms; errors come last', (t) => {
  const parsed = JSON.parse(formatJson(udpUpdate({ error: 'target unreachable' }))) as Record<string, unknown>;
  t.deepEqual(Object.keys(parsed).slice(8), ['bytes_sent', 'bytes_received', 'packets_sent', 'packets_received', 'duration_ms', 'error']);
  t.is(parsed.packets_sent, 3);
  t.is(parsed.packets_received, 2);
});

test('deny events name the reason, the action and the count', (t) => {
  t.deepEqual(JSON.parse(formatJson(deny({ count: 7 }))), {
    timestamp: new Date(deny().timestamp).toISOString(),
    listener_name: 'web',
    protocol: 'tcp',
    source_ip: '203.0.113.9',
    source_port: 4000,
    event_type: 'deny',
    reason: 'connection_limit',
    action: 'drop',
    count: 7,
  });
});

/** What the JSON line must equal: the object in the original's key order, through JSON.stringify. */
function reference(event: ReturnType<typeof tcpClose> | ReturnType<typeof udpUpdate>): string {
  const out: Record<string, unknown> = {
    timestamp: new Date(event.timestamp).toISOString(),
    listener_name: event.listener_name, protocol: event.protocol,
    source_ip: event.source_ip, source_port: event.source_port,
    target_ip: event.target_ip, target_port: event.target_port,
    event_type: event.event_type, bytes_sent: event.bytes_sent, bytes_received: event.bytes_received,
  };
  if (event.packets_sent !== undefined) {
    out.packets_sent = event.packets_sent;
    out.packets_received = event.packets_received ?? 0;
  }
  out.duration_ms = Math.round(event.duration_ms);
  if (event.error !== undefined) out.error = event.error;
  return JSON.stringify(out);
}

test('JSON lines are written out directly, byte for byte what JSON.stringify of the object gives', (t) => {
  const base = Date.UTC(2026, 0, 7, 9, 38, 44);
  // Milliseconds that need padding, second and day boundaries, a fractional stamp, the epoch.
  const stamps = [base, base + 5, base + 50, base + 999, base + 1000, base + 0.7, Date.UTC(2026, 11, 31, 23, 59, 59, 999), 0, Date.UTC(9999, 11, 31, 23, 59, 59, 1)];
  // Plain ASCII is quoted as it is; everything else must still come out as JSON.stringify has it
  // (a lone surrogate is escaped, DEL and non-ASCII are not).
  const texts = ['web', '192.0.2.7', 'a "quoted" name', 'back\\slash', 'tab\tnew\nline', 'ünïcödé ✓', '\u0001', '\u001f', '~\u007f', 'lone \ud800', ''];
  for (const timestamp of stamps) {
    for (const text of texts) {
      const tcp = tcpClose({ timestamp, listener_name: text, error: text, duration_ms: 12.5 });
      t.is(formatJson(tcp), reference(tcp));
      const udp = udpUpdate({ timestamp, target_ip: '2001:db8::1', source_ip: text });
      t.is(formatJson(udp), reference(udp));
    }
  }
  // Same second again after another one: the cached part follows the stamp.
  t.is(formatJson(tcpClose({ timestamp: base + 1 })), reference(tcpClose({ timestamp: base + 1 })));
});

test('a malformed event from a child still gives one valid JSON line', (t) => {
  const broken = { ...tcpClose(), source_port: undefined, bytes_sent: Number.NaN, listener_name: 7 } as unknown as ReturnType<typeof tcpClose>;
  const parsed = JSON.parse(formatJson(broken)) as Record<string, unknown>;
  t.is(parsed.source_port, null);
  t.is(parsed.bytes_sent, null);
  t.is(parsed.listener_name, null);
});

test('messages as JSON: timestamp, lower-case level, message, then fields', (t) => {
  t.deepEqual(Object.keys(JSON.parse(formatJson(message('listener web up', 'notice', { listener: 'web', pid: 3 }))) as object), [
    'timestamp', 'level', 'message', 'listener', 'pid',
  ]);
});

test('stdout text lines as SPEC.md shows them', (t) => {
  t.is(
    formatText(tcpClose()),
    '[2026-01-07 10:38:44] Connection closed: listener=web protocol=tcp src=192.168.1.50:12345 dst=192.168.1.100:80 duration=5230ms bytes_sent=1024 bytes_recv=4096',
  );
  t.is(
    formatText(tcpClose({ event_type: 'open', source_ip: '::1' })),
    '[2026-01-07 10:38:44] Connection opened: listener=web protocol=tcp src=[::1]:12345 dst=192.168.1.100:80',
  );
  t.is(formatText(message('disk "full"', 'error', { path: '/var/log/x y' })), '[2026-01-07 10:38:44] [ERROR] disk "full" path="/var/log/x y"');
});

test('the syslog body as SPEC.md shows it', (t) => {
  t.is(formatSyslogBody(tcpClose({ event_type: 'open' })), 'listener=web proto=tcp event=open src=192.168.1.50:12345 dst=192.168.1.100:80');
  t.is(formatSyslogBody(deny({ count: 2 })), 'listener=web proto=tcp event=deny src=203.0.113.9:4000 reason=connection_limit action=drop count=2');
});

test('a violation let through reads "Limit exceeded"; a refusal reads "Connection denied"', (t) => {
  t.regex(formatText(deny({ action: 'log_only' })), /\] Limit exceeded: /);
  t.regex(formatText(deny({ action: 'throttle', reason: 'bandwidth_limit' })), /\] Limit exceeded: .* reason=bandwidth_limit action=throttle$/);
  t.regex(formatText(deny({ action: 'throttle', reason: 'connection_limit' })), /\] Connection denied: .* action=throttle$/);
  t.regex(formatText(deny({ action: 'drop' })), /\] Connection denied: /);
  t.regex(formatText(deny({ action: 'deny', reason: 'acl' })), /\] Connection denied: .* reason=acl action=deny$/);
});
