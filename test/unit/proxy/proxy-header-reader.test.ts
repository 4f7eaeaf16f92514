/**
 * ProxyHeaderReader on real loopback sockets: the announced client handed on with the data that
 * followed the header intact, a header in pieces, LOCAL meaning the front itself, and every way a
 * connection is turned away (untrusted source, malformed header, end of stream, timeout) counted
 * and logged once per kind.
 */
import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import { ProxyHeaderReader } from '../../../src/proxy/proxy-header-reader.js';
import { encodeV1, encodeV2, encodeV2Local, type HostPort } from '../../../src/proxy/proxy-protocol.js';
import type { LogEvent } from '../../../src/telemetry/events.js';
import { ListenerStats } from '../../../src/telemetry/stats.js';
import type { TcpEnd } from '../../../src/platform/tcp-end.js';
import { listenEnds } from '../../helpers/servers.js';
import { waitFor } from '../../helpers/wait-for.js';

interface Handed {
  readonly client: HostPort;
  readonly destination: HostPort | null;
  readonly data: Promise<string>;
}

async function setup(t: ExecutionContext, trusted: string[], timeoutMs = 2000) {
  const stats = new ListenerStats();
  const events: LogEvent[] = [];
  const reader = new ProxyHeaderReader('front', { trusted, header_timeout: timeoutMs }, stats, (e) => events.push(e));
  t.teardown(() => reader.close());
  const handed: Handed[] = [];
  const ends = new Set<TcpEnd>();
  t.teardown(() => {
    for (const end of ends) end.close();
  });
  const port = await listenEnds(t, (end) => {
    ends.add(end);
    const peer = end.remote()!;
    reader.read(end, peer.address.replace(/^::ffff:/, ''), peer.port, (e, client, destination, early) => {
      // What the relay would do: take everything still to come, in order, starting with `early`.
      let text = (early ?? []).map((chunk) => chunk.toString('latin1')).join('');
      const buffer = Buffer.alloc(1024);
      let given = false;
      const data = new Promise<string>((resolve) => {
        e.onEnd = () => resolve(text);
        e.onError = () => resolve(text);
      });
      e.setSink({
        nextBuffer: () => (given ? null : ((given = true), buffer)),
        onStaticRead: (n) => {
          text += buffer.toString('latin1', 0, n);
          return true;
        },
      });
      // The reader stops reading as it hands over (inside the read): start again once it returned.
      queueMicrotask(() => void e.startReading());
      handed.push({ client, destination, data });
    });
  });
  return { port, reader, stats, events, handed };
}

/** Sends the pieces (one write each, a turn apart), then ends; resolves when the socket closed. */
function send(t: ExecutionContext, port: number, pieces: Buffer[], end = true): Promise<{ reset: boolean }> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    t.teardown(() => void socket.destroy());
    let reset = false;
    socket.on('error', () => (reset = true));
    socket.on('close', () => resolve({ reset }));
    socket.on('data', () => {});
    socket.on('connect', async () => {
      for (const piece of pieces) {
        socket.write(piece);
        await new Promise((r) => setTimeout(r, 5));
      }
      if (end) socket.end();
    });
  });
}

const src = { ip: '203.0.113.7', port: 40000 };
const dst = { ip: '198.51.100.1', port: 443 };

test('v1 and v2: the announced client, with the bytes after the header intact', async (t) => {
  const s = await setup(t, ['127.0.0.1']);
  void send(t, s.port, [Buffer.concat([encodeV1(src, dst), Buffer.from('GET / HTTP/1.0\r\n\r\n')])]);
  void send(t, s.port, [Buffer.concat([encodeV2('tcp', { ip: '2001:db8::7', port: 1 }, { ip: '2001:db8::1', port: 2 }), Buffer.from('\x00\x01binary')])]);
  await waitFor(() => s.handed.length === 2, 'both connections handed on');
  const byIp = new Map(s.handed.map((h) => [h.client.ip, h]));
  t.deepEqual(byIp.get('203.0.113.7')!.destination, dst);
  t.is(await byIp.get('203.0.113.7')!.data, 'GET / HTTP/1.0\r\n\r\n');
  t.is(byIp.get('2001:db8::7')!.client.port, 1);
  t.is(await byIp.get('2001:db8::7')!.data, '\x00\x01binary');
  t.is(s.reader.pending, 0);
  t.deepEqual(s.events, []);
});

test('a header in pieces, the data in a later write', async (t) => {
  const s = await setup(t, ['127.0.0.0/8']);
  const header = encodeV2('tcp', src, dst);
  void send(t, s.port, [header.subarray(0, 5), header.subarray(5, 14), header.subarray(14), Buffer.from('after')]);
  await waitFor(() => s.handed.length === 1, 'handed on');
  t.deepEqual(s.handed[0]!.client, src);
  t.is(await s.handed[0]!.data, 'after');
});

test('LOCAL: the front itself is the client, and no destination is announced', async (t) => {
  const s = await setup(t, ['127.0.0.1']);
  void send(t, s.port, [Buffer.concat([encodeV2Local(), Buffer.from('health')])]);
  await waitFor(() => s.handed.length === 1, 'handed on');
  t.is(s.handed[0]!.client.ip, '127.0.0.1');
  t.is(s.handed[0]!.destination, null);
  t.is(await s.handed[0]!.data, 'health');
});

test('an untrusted source is reset without reading; logged once, the rest counted', async (t) => {
  const s = await setup(t, ['10.0.0.0/8']);
  const outcomes = await Promise.all([1, 2, 3].map(() => send(t, s.port, [encodeV1(src, dst)])));
  for (const outcome of outcomes) t.true(outcome.reset);
  t.is(s.handed.length, 0);
  t.is(s.stats.takeDelta().errors.proxy_untrusted, 3);
  t.is(s.events.length, 1);
  t.regex((s.events[0] as { message: string }).message, /listener front: refused a connection from 127\.0\.0\.1:\d+: not a trusted PROXY protocol source/);
  s.reader.close();
  t.regex((s.events[1] as { message: string }).message, /\(and 2 more like it\)$/);
});

test('malformed, cut short, or too slow: reset, counted, logged by kind', async (t) => {
  const s = await setup(t, ['127.0.0.1'], 300);
  const bad = await send(t, s.port, [Buffer.from('GET / HTTP/1.1\r\n')], false);
  t.true(bad.reset);
  const short = await send(t, s.port, [encodeV2('tcp', src, dst).subarray(0, 20)]);
  t.true(short.reset);
  const slow = await send(t, s.port, [Buffer.from('PROXY TCP4 1.2.3.4')], false);
  t.true(slow.reset);
  t.is(s.handed.length, 0);
  t.is(s.stats.takeDelta().errors.proxy_header, 3);
  const messages = s.events.map((e) => (e as { message: string }).message);
  t.regex(messages[0]!, /malformed PROXY protocol header: no PROXY protocol header/);
  t.regex(messages[1]!, /the connection ended before a complete PROXY protocol header/);
  t.regex(messages[2]!, /no complete PROXY protocol header within 300 ms/);
  t.is(s.reader.pending, 0);
});

test('abortAll() resets the connections still waiting for their header', async (t) => {
  const s = await setup(t, ['127.0.0.1']);
  const waiting = send(t, s.port, [Buffer.from('PROXY ')], false);
  await waitFor(() => s.reader.pending === 1, 'one connection waiting');
  let settled = 0;
  s.reader.onSettled = () => settled++;
  s.reader.abortAll();
  t.true((await waiting).reset);
  t.is(s.reader.pending, 0);
  t.is(settled, 1);
});
