/**
 * The PROXY protocol codec against the layout of HAProxy's doc/proxy-protocol.txt: known vectors
 * (the spec's v1 example, a v2 header as HAProxy writes it), every field of what we encode, and
 * every rule a receiver must enforce.
 */
import test from 'ava';
import {
  encodeV1,
  encodeV2,
  encodeV2Local,
  parseProxyHeader,
  V2_SIGNATURE,
  type ParseResult,
} from '../../../src/proxy/proxy-protocol.js';

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ''), 'hex');

function header(result: ParseResult): Extract<ParseResult, { kind: 'header' }> {
  if (result.kind !== 'header') throw new Error(`expected a header, got ${JSON.stringify(result)}`);
  return result;
}

// ---- known vectors ----------------------------------------------------------------------------

test('v1: the example line of the spec, followed by the request', (t) => {
  const input = Buffer.from('PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n', 'latin1');
  const parsed = header(parseProxyHeader(input));
  t.deepEqual(parsed.header, { version: 1, source: { ip: '192.168.0.1', port: 56324 }, destination: { ip: '192.168.0.11', port: 443 } });
  t.is(input.subarray(parsed.length).toString(), 'GET / HTTP/1.1\r\n');
});

test('v2: a TCP over IPv4 header as HAProxy sends it', (t) => {
  // sig, 0x21 (v2 PROXY), 0x11 (INET STREAM), len 12, 172.19.0.1 → 172.19.0.3, 42578 → 80, then "GET "
  const input = hex('0d0a0d0a000d0a515549540a 21 11 000c ac130001 ac130003 a652 0050 47455420');
  const parsed = header(parseProxyHeader(input));
  t.is(parsed.length, 28);
  t.deepEqual(parsed.header, { version: 2, source: { ip: '172.19.0.1', port: 42578 }, destination: { ip: '172.19.0.3', port: 80 } });
  t.is(input.subarray(parsed.length).toString(), 'GET ');
});

// ---- encoding -----------------------------------------------------------------------------------

test('encodeV1: TCP4 and TCP6 lines, a mapped IPv4 client next to an IPv6 destination written as TCP6', (t) => {
  t.is(encodeV1({ ip: '192.0.2.1', port: 40000 }, { ip: '198.51.100.2', port: 443 }).toString(), 'PROXY TCP4 192.0.2.1 198.51.100.2 40000 443\r\n');
  t.is(encodeV1({ ip: '::ffff:192.0.2.1', port: 1 }, { ip: '127.0.0.1', port: 2 }).toString(), 'PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n');
  t.is(encodeV1({ ip: '2001:DB8:0:0::1', port: 5 }, { ip: '::1', port: 6 }).toString(), 'PROXY TCP6 2001:db8::1 ::1 5 6\r\n');
  t.is(encodeV1({ ip: '192.0.2.1', port: 5 }, { ip: '2001:db8::2', port: 6 }).toString(), 'PROXY TCP6 ::ffff:c000:201 2001:db8::2 5 6\r\n');
});

test('encodeV2: every byte of an IPv4 TCP header', (t) => {
  const out = encodeV2('tcp', { ip: '192.0.2.1', port: 0x1234 }, { ip: '198.51.100.2', port: 443 });
  t.deepEqual(out, hex('0d0a0d0a000d0a515549540a 21 11 000c c0000201 c6336402 1234 01bb'));
});

test('encodeV2: IPv6 UDP header, and an IPv4 client of a wildcard IPv6 socket', (t) => {
  const six = encodeV2('udp', { ip: '2001:db8::1', port: 53000 }, { ip: '::1', port: 53 });
  t.is(six.length, 16 + 36);
  t.deepEqual(six.subarray(12, 16), hex('21 22 0024'));
  t.deepEqual(six.subarray(16, 32), hex('20010db8000000000000000000000001'));
  t.deepEqual(six.subarray(32, 48), hex('00000000000000000000000000000001'));
  t.is(six.readUInt16BE(48), 53000);
  t.is(six.readUInt16BE(50), 53);
  // Node reports the client as ::ffff:a.b.c.d and the bound address as "::".
  const mapped = encodeV2('udp', { ip: '::ffff:127.0.0.1', port: 7 }, { ip: '::', port: 53 });
  t.deepEqual(mapped.subarray(12), hex('21 12 000c 7f000001 00000000 0007 0035'));
});

test('encodeV2Local: version 2, LOCAL, UNSPEC, no addresses', (t) => {
  t.deepEqual(encodeV2Local(), Buffer.concat([V2_SIGNATURE, hex('20 00 0000')]));
  t.deepEqual(header(parseProxyHeader(encodeV2Local())).header, { version: 2, source: null, destination: null });
});

test('round trip: what we encode, we decode to the same addresses', (t) => {
  const cases: Array<[string, number, string, number]> = [
    ['10.1.2.3', 0, '10.3.2.1', 65535],
    ['2001:db8::42', 1234, '2001:db8::1', 80],
    ['::1', 1, '::1', 2],
  ];
  for (const [src, sport, dst, dport] of cases) {
    const expected = { source: { ip: src, port: sport }, destination: { ip: dst, port: dport } };
    for (const buf of [encodeV1(expected.source, expected.destination), encodeV2('tcp', expected.source, expected.destination)]) {
      const parsed = header(parseProxyHeader(buf));
      t.is(parsed.length, buf.length);
      t.deepEqual({ source: parsed.header.source, destination: parsed.header.destination }, expected);
    }
  }
});

// ---- decoding: partial input --------------------------------------------------------------------

test('a header arriving a byte at a time is partial until its last byte', (t) => {
  for (const buf of [encodeV1({ ip: '192.0.2.1', port: 1 }, { ip: '192.0.2.2', port: 2 }), encodeV2('tcp', { ip: '2001:db8::1', port: 1 }, { ip: '2001:db8::2', port: 2 })]) {
    for (let n = 1; n < buf.length; n++) t.is(parseProxyHeader(buf.subarray(0, n)).kind, 'partial', `${n} of ${buf.length}`);
    t.is(parseProxyHeader(buf).kind, 'header');
  }
});

test('v2 TLVs are skipped as part of the announced length', (t) => {
  const base = encodeV2('tcp', { ip: '192.0.2.1', port: 1 }, { ip: '192.0.2.2', port: 2 });
  const tlv = hex('04 0003 000000'); // PP2_TYPE_NOOP, 3 bytes
  const withTlv = Buffer.concat([base, tlv, Buffer.from('data')]);
  withTlv.writeUInt16BE(12 + tlv.length, 14);
  const parsed = header(parseProxyHeader(withTlv));
  t.is(parsed.length, base.length + tlv.length);
  t.is(parsed.header.source!.ip, '192.0.2.1');
  t.is(parseProxyHeader(withTlv.subarray(0, base.length + 2)).kind, 'partial');
});

// ---- decoding: what uses the real endpoints -------------------------------------------------------

test('v1 UNKNOWN (short and long forms), v2 LOCAL with addresses, UNSPEC and UNIX carry no usable address', (t) => {
  for (const line of ['PROXY UNKNOWN\r\n', 'PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n']) {
    const parsed = header(parseProxyHeader(Buffer.from(`${line}x`)));
    t.deepEqual(parsed.header, { version: 1, source: null, destination: null });
    t.is(parsed.length, line.length);
  }
  const local = encodeV2('tcp', { ip: '192.0.2.1', port: 1 }, { ip: '192.0.2.2', port: 2 });
  local[12] = 0x20;
  t.deepEqual(header(parseProxyHeader(local)).header.source, null);
  const unspec = Buffer.concat([V2_SIGNATURE, hex('21 00 0000')]);
  t.deepEqual(header(parseProxyHeader(unspec)).header.source, null);
  const unix = Buffer.concat([V2_SIGNATURE, hex('21 31 00d8'), Buffer.alloc(216)]);
  t.deepEqual(header(parseProxyHeader(unix)), { kind: 'header', header: { version: 2, source: null, destination: null }, length: 232 });
});

// ---- decoding: what must be refused ---------------------------------------------------------------

const refused: Array<[string, Buffer, RegExp]> = [
  ['plain HTTP', Buffer.from('GET / HTTP/1.1\r\n'), /no PROXY protocol header/],
  ['a TLS ClientHello', hex('16030100a5010000a10303'), /no PROXY protocol header/],
  ['lower-case proxy', Buffer.from('proxy TCP4 1.2.3.4 1.2.3.5 1 2\r\n'), /no PROXY protocol header/],
  ['v1 without CRLF in 107 bytes', Buffer.from(`PROXY TCP6 ${'a'.repeat(120)}`), /no CRLF within 107/],
  ['v1 ended by LF alone', Buffer.from('PROXY TCP4 1.2.3.4 1.2.3.5 1 2\n'), /without CR/],
  ['v1 CR not followed by LF', Buffer.from('PROXY TCP4 1.2.3.4 1.2.3.5 1 2\rX'), /CR not followed by LF/],
  ['v1 double space', Buffer.from('PROXY TCP4  1.2.3.4 1.2.3.5 1 2\r\n'), /expected/],
  ['v1 unknown protocol', Buffer.from('PROXY UDP4 1.2.3.4 1.2.3.5 1 2\r\n'), /unknown protocol "UDP4"/],
  ['v1 TCP4 with IPv6', Buffer.from('PROXY TCP4 ::1 ::1 1 2\r\n'), /not an IPv4 address/],
  ['v1 TCP6 with IPv4', Buffer.from('PROXY TCP6 1.2.3.4 1.2.3.5 1 2\r\n'), /not an IPv6 address/],
  ['v1 leading zero in an address', Buffer.from('PROXY TCP4 01.2.3.4 1.2.3.5 1 2\r\n'), /not an IPv4 address/],
  ['v1 leading zero in a port', Buffer.from('PROXY TCP4 1.2.3.4 1.2.3.5 01 2\r\n'), /bad port "01"/],
  ['v1 port beyond 65535', Buffer.from('PROXY TCP4 1.2.3.4 1.2.3.5 1 65536\r\n'), /bad port "65536"/],
  ['v1 control character', Buffer.from('PROXY TCP4 1.2.3.4\t1.2.3.5 1 2\r\n'), /printable/],
  ['v2 version 1', Buffer.concat([V2_SIGNATURE, hex('11 11 000c'), Buffer.alloc(12)]), /version 1/],
  ['v2 unknown command', Buffer.concat([V2_SIGNATURE, hex('22 11 000c'), Buffer.alloc(12)]), /unknown command 2/],
  ['v2 unknown family', Buffer.concat([V2_SIGNATURE, hex('21 41 000c'), Buffer.alloc(12)]), /unknown address family 4/],
  ['v2 unknown transport', Buffer.concat([V2_SIGNATURE, hex('21 13 000c'), Buffer.alloc(12)]), /unknown transport 3/],
  ['v2 IPv6 addresses cut short', Buffer.concat([V2_SIGNATURE, hex('21 21 000c'), Buffer.alloc(12)]), /too short/],
];
for (const [name, input, reason] of refused) {
  test(`refused: ${name}`, (t) => {
    const result = parseProxyHeader(input);
    t.is(result.kind, 'invalid');
    if (result.kind === 'invalid') t.regex(result.reason, reason);
  });
}

test('a v1 line of exactly 107 bytes is accepted; the line that would need 108 is not', (t) => {
  const max = 'PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n';
  t.is(max.length, 107);
  t.is(parseProxyHeader(Buffer.from(max)).kind, 'header');
  const over = max.replace('65535 65535', '65535 655350');
  t.is(parseProxyHeader(Buffer.from(over)).kind, 'invalid');
});
