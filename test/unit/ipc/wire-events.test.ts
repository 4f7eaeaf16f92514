/**
 * Connection events on the IPC channel (wire-events.ts): what the child encodes, the supervisor
 * decodes to the same event, TCP and UDP, with and without an error; other events pass as they are.
 */
import test from 'ava';
import { CONNECTION_EVENT_TYPES, decodeEvent, encodeConnection, type WireOrigin } from '../../../src/ipc/wire-events.js';
import type { ConnectionEvent, LogEvent } from '../../../src/telemetry/events.js';

const T0 = 1_764_161_234_000;
const TCP: ConnectionEvent = {
  kind: 'connection', event_type: 'close', timestamp: T0 + 1234, listener_name: 'web', protocol: 'tcp',
  source_ip: '2001:db8::7', source_port: 54321, target_ip: '10.0.0.2', target_port: 8080,
  bytes_sent: 78, bytes_received: 1_234_567_890_123, duration_ms: 15,
};

function roundTrip(event: ConnectionEvent): LogEvent {
  const origin: WireOrigin = { listener_name: event.listener_name, protocol: event.protocol, t0: T0 };
  // Through JSON, as node's IPC carries it.
  const wire = JSON.parse(JSON.stringify(encodeConnection(event, T0))) as unknown[];
  return decodeEvent(wire as never, origin);
}

test('a TCP event comes back equal, with no key on the wire and a small timestamp offset', (t) => {
  const wire = encodeConnection(TCP, T0);
  t.true(Array.isArray(wire));
  t.is(wire.length, 9, 'nothing optional when there is nothing optional');
  t.is(wire[1], 1234);
  t.false(JSON.stringify(wire).includes('source_ip'));
  t.deepEqual(roundTrip(TCP), TCP);
});

test('an error, and a UDP event\'s packets, come back; absent ones stay absent', (t) => {
  const failed: ConnectionEvent = { ...TCP, event_type: 'error', error: 'connect to 10.0.0.2:8080 failed: connection refused (ECONNREFUSED)' };
  t.deepEqual(roundTrip(failed), failed);
  t.false('packets_sent' in roundTrip(failed));
  const udp: ConnectionEvent = { ...TCP, protocol: 'udp', event_type: 'update', packets_sent: 3, packets_received: 0 };
  t.deepEqual(roundTrip(udp), udp);
  t.false('error' in roundTrip(udp));
  for (const type of CONNECTION_EVENT_TYPES) t.is((roundTrip({ ...TCP, event_type: type }) as ConnectionEvent).event_type, type);
});

test('deny and message events travel as they are', (t) => {
  const origin: WireOrigin = { listener_name: 'web', protocol: 'tcp', t0: T0 };
  const message: LogEvent = { kind: 'message', timestamp: T0, level: 'info', message: 'hello' };
  t.is(decodeEvent(message, origin), message);
});

test('a malformed tuple still decodes to strings and numbers (the supervisor formats whatever arrives)', (t) => {
  const origin: WireOrigin = { listener_name: 'web', protocol: 'tcp', t0: T0 };
  const event = decodeEvent([9, 'x', null, '80', 5, null] as never, origin) as ConnectionEvent;
  t.is(event.event_type, 'update');
  t.is(event.timestamp, T0);
  t.is(event.source_ip, '');
  t.is(event.source_port, 0);
  t.is(event.target_ip, '');
  t.is(event.bytes_sent, 0);
  t.is(event.duration_ms, 0);
});
