/**
 * PROXY protocol end to end (issue 11): what the backend receives from `proxy_protocol` v1 and v2
 * (TCP, IPv4 and IPv6 clients; UDP v2 on every datagram), and `accept_proxy_protocol` — the
 * announced client used by the allowlist, denylist, limits and logs; untrusted sources and bad
 * headers closed, counted and logged; both directions chained; and live reload. Backends parse the
 * headers with their own parser (test/helpers/upstream.ts).
 */
import test, { type ExecutionContext } from 'ava';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { startDaemon } from '../helpers/daemon.js';
import { waitForConnectionLines, waitForDeny } from '../helpers/log-lines.js';
import { MAIN_FILE_WITH_METRICS, waitForSample } from '../helpers/metrics.js';
import { slots } from '../helpers/slots.js';
import { startUdpBackend, udpClient } from '../helpers/udp.js';
import { waitFor } from '../helpers/wait-for.js';
import { echoThrough, proxyBackend, readHeader } from '../helpers/upstream.js';

const slot = slots(2);

function tcpFile(target: string, extra = '', listen = '127.0.0.1:0'): string {
  return `protocol: tcp\nlisten_address: "${listen}"\ntarget_address: "${target}"\nallowlist: ["127.0.0.0/8", "::1", "203.0.113.0/24", "2001:db8::/32"]\n${extra}`;
}

/** Sends `header` + `payload` as a front would, resolves with the echo or null when reset. */
function asFront(t: ExecutionContext, port: number, header: string | Buffer, payload: string, localAddress?: string): Promise<string | null> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', ...(localAddress ? { localAddress } : {}) });
    t.teardown(() => void socket.destroy());
    let got = '';
    socket.on('connect', () => socket.write(Buffer.concat([Buffer.from(header), Buffer.from(payload)])));
    socket.on('data', (chunk: Buffer) => {
      got += chunk.toString('latin1');
      if (got.length >= payload.length) {
        socket.end();
        resolve(got);
      }
    });
    socket.on('error', () => resolve(null));
    socket.on('close', () => resolve(null));
  });
}

// ---- toward the target ------------------------------------------------------------------------

for (const version of ['v1', 'v2'] as const) {
  test(`proxy_protocol ${version}: the backend learns IPv4 and IPv6 clients and where they connected`, async (t) => {
    await slot(t);
    const v4 = await proxyBackend(t);
    const v6 = await proxyBackend(t, '::1');
    const daemon = await startDaemon(t, {
      'conf.d/four.yaml': tcpFile(`127.0.0.1:${v4.port}`, `proxy_protocol: ${version}\n`),
      'conf.d/six.yaml': tcpFile(`[::1]:${v6.port}`, `proxy_protocol: ${version}\n`, '[::1]:0'),
      'conf.d/dual.yaml': tcpFile(`127.0.0.1:${v4.port}`, `proxy_protocol: ${version}\n`, ':0'),
    });
    const four = await daemon.port('four');
    const six = await daemon.port('six');
    const dual = await daemon.port('dual');

    const a = await echoThrough(t, four, 'hello four', { localAddress: '127.0.0.2' });
    t.is(a.reply, 'hello four');
    const b = await echoThrough(t, six, 'hello six', { host: '::1' });
    t.is(b.reply, 'hello six');
    // An IPv4 client of a dual-stack socket is announced as IPv4, to an IPv4 destination.
    const c = await echoThrough(t, dual, 'hello dual', { localAddress: '127.0.0.3' });
    t.is(c.reply, 'hello dual');

    const byData = (backend: typeof v4, text: string) => waitFor(() => backend.connections.find((x) => x.data() === text), `the backend to get "${text}"`);
    const h4 = (await byData(v4, 'hello four')).header;
    t.deepEqual([h4.version, h4.kind, h4.source, h4.sourcePort, h4.destination, h4.destinationPort], [version === 'v1' ? 1 : 2, version === 'v1' ? 'TCP4' : 'tcp4', '127.0.0.2', a.localPort, '127.0.0.1', four]);
    const h6 = (await byData(v6, 'hello six')).header;
    t.deepEqual([h6.kind, h6.source, h6.sourcePort, h6.destination, h6.destinationPort], [version === 'v1' ? 'TCP6' : 'tcp6', '::1', b.localPort, '::1', six]);
    const hd = (await byData(v4, 'hello dual')).header;
    t.deepEqual([hd.kind, hd.source, hd.sourcePort, hd.destination, hd.destinationPort], [version === 'v1' ? 'TCP4' : 'tcp4', '127.0.0.3', c.localPort, '127.0.0.1', dual]);

    // The header is not client data: bytes_sent counts only what the client sent.
    const [closed] = await waitForConnectionLines(daemon, 'closed', 'four', 1);
    t.regex(closed!, /bytes_sent=10 bytes_recv=10$/);
  });
}

test('proxy_protocol v2 over UDP: every datagram of a session starts with the header; replies come back bare', async (t) => {
  await slot(t);
  const v4 = await startUdpBackend(t, { respond: (data) => Buffer.from(`len=${data.length}`) });
  const v6 = await startUdpBackend(t, { host: '::1', respond: (data) => Buffer.from(`len=${data.length}`) });
  const udp = (target: string, listen: string): string =>
    `protocol: udp\nlisten_address: "${listen}"\ntarget_address: "${target}"\nallowlist: ["127.0.0.0/8", "::1"]\nproxy_protocol: v2\n`;
  const daemon = await startDaemon(t, {
    'conf.d/dns4.yaml': udp(`127.0.0.1:${v4.port}`, '127.0.0.1:0'),
    'conf.d/dns6.yaml': udp(`[::1]:${v6.port}`, '[::1]:0'),
  });
  const port4 = await daemon.port('dns4');
  const port6 = await daemon.port('dns6');
  const client4 = await udpClient(t, port4, { localAddress: '127.0.0.2' });
  const client6 = await udpClient(t, port6, { host: '::1' });
  t.is((await client4.request('query-1')).toString(), 'len=35', '28 bytes of header + 7');
  t.is((await client4.request('q2')).toString(), 'len=30');
  t.is((await client6.request('query-6')).toString(), 'len=59', '52 bytes of header + 7');

  for (const [backend, payloads, source, sourcePort, destination, destinationPort, kind] of [
    [v4, ['query-1', 'q2'], '127.0.0.2', client4.localPort, '127.0.0.1', port4, 'udp4'],
    [v6, ['query-6'], '::1', client6.localPort, '::1', port6, 'udp6'],
  ] as const) {
    t.is(backend.received.length, payloads.length);
    backend.received.forEach((datagram, i) => {
      const header = readHeader(datagram.data)!;
      t.deepEqual([header.kind, header.source, header.sourcePort, header.destination, header.destinationPort], [kind, source, sourcePort, destination, destinationPort]);
      t.is(datagram.data.subarray(header.length).toString(), payloads[i]!);
    });
  }
});

// ---- from a trusted front -------------------------------------------------------------------------

test('accept_proxy_protocol: the announced client is the one logged and checked; the target sees clean data', async (t) => {
  await slot(t);
  const echo = await proxyBackend(t);
  const plain = net.createServer((s) => s.pipe(s));
  t.teardown(() => new Promise<void>((resolve) => plain.close(() => resolve())));
  await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
  const plainPort = (plain.address() as net.AddressInfo).port;
  const accept = 'accept_proxy_protocol:\n  trusted: ["127.0.0.1"]\n';
  const daemon = await startDaemon(t, {
    'packetpony.yaml': MAIN_FILE_WITH_METRICS,
    // Only the announced networks are allowed: the front's own 127.0.0.1 is not.
    'conf.d/front.yaml': `protocol: tcp\nlisten_address: "127.0.0.1:0"\ntarget_address: "127.0.0.1:${plainPort}"\nallowlist: ["203.0.113.0/24", "2001:db8::/32"]\ndenylist: ["203.0.113.66"]\nrate_limits:\n  max_connections_per_ip: 1\n${accept}`,
    // Both ways: read the front's header, send our own to the target with the same client.
    'conf.d/chain.yaml': `protocol: tcp\nlisten_address: "127.0.0.1:0"\ntarget_address: "127.0.0.1:${echo.port}"\nallowlist: ["203.0.113.0/24"]\nproxy_protocol: v2\n${accept}`,
  });
  const front = await daemon.port('front');
  const chain = await daemon.port('chain');

  t.is(await asFront(t, front, 'PROXY TCP4 203.0.113.7 198.51.100.1 40001 443\r\n', 'one'), 'one');
  const [open] = await waitForConnectionLines(daemon, 'opened', 'front', 1);
  t.regex(open!, /src=203\.0\.113\.7:40001 dst=127\.0\.0\.1:\d+$/);

  // v2 with IPv6, and the data in the same segment as the header.
  const v2 = Buffer.from('0d0a0d0a000d0a515549540a2121002420010db80000000000000000000000422001' + '0db8000000000000000000000001a4100050', 'hex');
  t.is(await asFront(t, front, v2, 'two'), 'two');
  await waitFor(() => daemon.lines.some((l) => /Connection opened: listener=front .*src=\[2001:db8::42\]:42000 /.test(l)), 'the IPv6 client logged');

  // The denylist and the limits see the announced address, not the front's.
  t.is(await asFront(t, front, 'PROXY TCP4 203.0.113.66 198.51.100.1 1 443\r\n', 'x'), null);
  await waitForDeny(daemon, 'front', 'denylist', '203.0.113.66');
  const held = net.connect(front, '127.0.0.1');
  t.teardown(() => void held.destroy());
  held.on('error', () => {});
  held.write('PROXY TCP4 203.0.113.9 198.51.100.1 5000 443\r\nhold');
  await waitFor(() => daemon.lines.some((l) => /Connection opened: listener=front .*src=203\.0\.113\.9:5000 /.test(l)), 'the held connection');
  t.is(await asFront(t, front, 'PROXY TCP4 203.0.113.9 198.51.100.1 5001 443\r\n', 'y'), null, 'one connection per announced address');
  await waitForDeny(daemon, 'front', 'connection_limit', '203.0.113.9');
  t.is(await asFront(t, front, 'PROXY TCP4 203.0.113.10 198.51.100.1 5002 443\r\n', 'z'), 'z', 'another announced address is admitted');

  // Chained: the target's header names the client the front announced, and where it went.
  t.is(await asFront(t, chain, 'PROXY TCP4 203.0.113.5 198.51.100.9 33333 8443\r\n', 'chained'), 'chained');
  const seen = await waitFor(() => echo.connections.find((c) => c.data() === 'chained'), 'the chained connection');
  t.deepEqual([seen.header.source, seen.header.sourcePort, seen.header.destination, seen.header.destinationPort], ['203.0.113.5', 33333, '198.51.100.9', 8443]);
  t.is(await waitForSample(daemon, 'packetpony_acl_drops_total', { listener: 'front' }, 1), 1);
});

test('accept_proxy_protocol: untrusted sources and bad headers are closed, counted and logged without flooding', async (t) => {
  await slot(t);
  const echo = await proxyBackend(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': MAIN_FILE_WITH_METRICS,
    'conf.d/lb.yaml': tcpFile(`127.0.0.1:${echo.port}`, 'accept_proxy_protocol:\n  trusted: ["127.0.0.1"]\n  header_timeout: "500ms"\n'),
  });
  const port = await daemon.port('lb');
  const header = 'PROXY TCP4 203.0.113.7 198.51.100.1 40001 443\r\n';
  for (let i = 0; i < 5; i++) t.is(await asFront(t, port, header, 'nope', '127.0.0.2'), null, 'not a trusted front');
  t.is(await asFront(t, port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', 'nope'), null, 'no header');
  t.is(await asFront(t, port, 'PROXY TCP4 203.0.113.7 198.51.100.1 40001\r\n', 'nope'), null, 'a malformed one');
  // A front that says nothing is closed at the header timeout.
  const silent = await new Promise<boolean>((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    t.teardown(() => void socket.destroy());
    socket.on('error', () => resolve(true));
    socket.on('close', () => resolve(true));
  });
  t.true(silent);

  await daemon.waitForLine(/\[WARNING\] listener lb: refused a connection from 127\.0\.0\.2:\d+: not a trusted PROXY protocol source/);
  await daemon.waitForLine(/\[WARNING\] listener lb: closed a connection from 127\.0\.0\.1:\d+: malformed PROXY protocol header: no PROXY protocol header/);
  await daemon.waitForLine(/\[WARNING\] listener lb: closed a connection from 127\.0\.0\.1:\d+: no complete PROXY protocol header within 500 ms/);
  // Repeats of a kind are folded into one line with their count when the 10 s interval ends.
  await daemon.waitForLine(/not a trusted PROXY protocol source .*\(and 4 more like it\).* count=4/);
  await daemon.waitForLine(/malformed PROXY protocol header: v1 header: expected .*\(and 1 more like it\)/);
  t.is(daemon.lines.filter((l) => l.includes('not a trusted PROXY protocol source')).length, 2, 'five refusals, two lines');
  t.is(await waitForSample(daemon, 'packetpony_errors_total', { listener: 'lb', type: 'proxy_untrusted' }, 5), 5);
  t.is(await waitForSample(daemon, 'packetpony_errors_total', { listener: 'lb', type: 'proxy_header' }, 3), 3);
  t.is(echo.connections.length, 0, 'the target never saw any of them');
  t.false(daemon.lines.some((l) => l.includes('Connection opened')));
});

test('live reload: proxy_protocol and accept_proxy_protocol switched on and off without a restart', async (t) => {
  await slot(t);
  const echo = await proxyBackend(t);
  const plainTarget = await startDaemonFreeEcho(t);
  const daemon = await startDaemon(t, { 'conf.d/web.yaml': tcpFile(`127.0.0.1:${plainTarget}`) });
  const port = await daemon.port('web');
  t.is((await echoThrough(t, port, 'before')).reply, 'before');

  let from = daemon.lines.length;
  writeFileSync(join(daemon.dir, 'conf.d/web.yaml'), tcpFile(`127.0.0.1:${echo.port}`, 'proxy_protocol: v1\naccept_proxy_protocol:\n  trusted: ["127.0.0.1"]\n'));
  await daemon.waitForLine(/listener web reconfigured/, 15_000, from);
  t.is(await daemon.port('web'), port, 'same socket');
  t.is(await asFront(t, port, 'PROXY TCP4 203.0.113.8 198.51.100.1 1234 80\r\n', 'after'), 'after');
  const seen = await waitFor(() => echo.connections.find((c) => c.data() === 'after'), 'the backend to get a header');
  t.deepEqual([seen.header.kind, seen.header.source, seen.header.sourcePort], ['TCP4', '203.0.113.8', 1234]);
  t.is((await echoThrough(t, port, 'no header now')).reply, null, 'a client without a header is refused now');

  from = daemon.lines.length;
  writeFileSync(join(daemon.dir, 'conf.d/web.yaml'), tcpFile(`127.0.0.1:${plainTarget}`));
  await daemon.waitForLine(/listener web reconfigured/, 15_000, from);
  t.is((await echoThrough(t, port, 'plain again')).reply, 'plain again');
});

/** A plain echo server for the reload test. */
async function startDaemonFreeEcho(t: ExecutionContext): Promise<number> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  const sockets = new Set<net.Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  t.teardown(() => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  }));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}
