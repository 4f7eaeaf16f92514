import test from 'ava';
import { localDatagram, MAX_BODY_CHARS, priority, rfc3164Timestamp, syslogBody, taggedBody } from '../../../src/telemetry/sinks/syslog-message.js';
import { message, tcpClose, udpUpdate, WHEN } from './fixtures.js';

test('RFC 3164 time stamps pad a one-digit day with a space', (t) => {
  t.is(rfc3164Timestamp(WHEN), 'Jan  7 10:38:44');
  t.is(rfc3164Timestamp(new Date(2026, 10, 25, 8, 5, 9).getTime()), 'Nov 25 08:05:09');
});

test('PRI is facility daemon (3) times 8 plus the severity', (t) => {
  t.is(priority('emerg'), 24);
  t.is(priority('err'), 27);
  t.is(priority('warning'), 28);
  t.is(priority('info'), 30);
  t.is(priority('debug'), 31);
});

test('the local datagram is <PRI>TIMESTAMP TAG[PID]: BODY, without a host name', (t) => {
  t.is(
    localDatagram('packetpony', 4242, tcpClose(), 'info').toString(),
    '<30>Jan  7 10:38:44 packetpony[4242]: listener=web proto=tcp event=close src=192.168.1.50:12345 dst=192.168.1.100:80 duration=5230ms bytes_sent=1024 bytes_recv=4096',
  );
});

test('UDP bodies carry the packet counts', (t) => {
  t.is(
    taggedBody('pp', 1, udpUpdate()),
    'pp[1]: listener=dns proto=udp event=update src=192.168.1.50:12345 dst=192.168.1.100:80 duration=5230ms bytes_sent=1024 bytes_recv=4096 pkts_sent=3 pkts_recv=2',
  );
});

test('a body stays on one line and within the size limit', (t) => {
  t.is(syslogBody(message('first\nsecond\r\tthird')), 'first second  third');
  const long = syslogBody(message('x'.repeat(MAX_BODY_CHARS * 2)));
  t.is(long.length, MAX_BODY_CHARS);
  t.true(long.endsWith('…'));
});
