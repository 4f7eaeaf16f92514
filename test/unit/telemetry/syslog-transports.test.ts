/** The real syslog transports against receivers on loopback and in a temp folder. */
import test from 'ava';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { LogSinkError, PacketPonyError } from '../../../src/errors.js';
import { UnixDatagramSocket, nativeUnixDatagrams, type UnixDatagramSource } from '../../../src/native/unix-dgram.js';
import { RetryDelay } from '../../../src/telemetry/sinks/retry-delay.js';
import { networkSyslog } from '../../../src/telemetry/sinks/syslog-network.js';
import { SyslogSink, type SyslogConnect } from '../../../src/telemetry/sinks/syslog-sink.js';
import { unixSyslog } from '../../../src/telemetry/sinks/syslog-unix.js';
import { unixReceiver } from '../../helpers/unix-receiver.js';
import { waitFor } from '../../helpers/wait-for.js';
import { message, recordingContext, tcpClose } from './fixtures.js';


function newSink(t: ExecutionContext, connect: SyslogConnect) {
  const context = recordingContext();
  const sink = new SyslogSink({ connect, destination: 'test', threshold: 'debug', context, retry: new RetryDelay(10, 50) });
  t.teardown(() => sink.close(0));
  return { sink, context };
}

const HEADER = String.raw`<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d`;

test('udp: RFC 3164 with host name, tag and pid; severity in PRI', async (t) => {
  const server = dgram.createSocket('udp4');
  const received: string[] = [];
  server.on('message', (msg) => received.push(msg.toString()));
  await new Promise<void>((resolve) => server.bind(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const { sink } = newSink(t, networkSyslog({ protocol: 'udp', address: `127.0.0.1:${server.address().port}`, tag: 'ppudp' }));
  sink.write(tcpClose(), 'info');
  sink.write(message('disk trouble', 'error'), 'err');
  await waitFor(() => received.length === 2, 'two datagrams');
  const close = new RegExp(`^${HEADER} ${hostname()} ppudp\\[${process.pid}\\]: listener=web proto=tcp event=close src=192\\.168\\.1\\.50:12345 dst=192\\.168\\.1\\.100:80 duration=5230ms bytes_sent=1024 bytes_recv=4096\\n$`);
  t.regex(received[0]!, close);
  t.is(close.exec(received[0]!)![1], '30');
  t.regex(received[1]!, /^<27>.* ppudp\[\d+\]: disk trouble\n$/);
});

test('tcp: newline-framed messages; a dropped connection is reconnected and nothing is lost', async (t) => {
  const lines: string[] = [];
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let partial = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop()!;
      lines.push(...parts);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()); }));
  const port = (server.address() as net.AddressInfo).port;
  const { sink, context } = newSink(t, networkSyslog({ protocol: 'tcp', address: `127.0.0.1:${port}`, tag: 'pptcp' }));
  for (let i = 0; i < 50; i++) sink.write(message(`first ${i}`), 'info');
  await waitFor(() => lines.length === 50, '50 lines');
  t.regex(lines[0]!, new RegExp(`^<30>[A-Z][a-z]{2} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d ${hostname()} pptcp\\[${process.pid}\\]: first 0$`));
  for (const socket of sockets) socket.destroy();
  await waitFor(() => context.reports.length > 0, 'the sink to notice the hang-up');
  for (let i = 0; i < 50; i++) sink.write(message(`second ${i}`), 'info');
  await waitFor(() => lines.filter((l) => l.includes('second')).length === 50, 'the second 50 lines');
  t.is(connections, 2);
  t.deepEqual(lines.filter((l) => l.includes('second')).map((l) => l.replace(/^.*: /, '')), Array.from({ length: 50 }, (_, i) => `second ${i}`));
});

test('tcp: a refused connection is retried with backoff while events wait', async (t) => {
  // A port bound but not listening refuses connections, and stays ours for the whole test.
  const { bindListener } = await import('../../../src/supervisor/socket-owner.js');
  const bound = bindListener({ protocol: 'tcp', listen: { host: '127.0.0.1', port: 0 }, ipv6_only: false } as Parameters<typeof bindListener>[0]);
  if (!bound.ok) throw new Error(bound.message);
  t.teardown(() => bound.socket.close());
  const { sink, context } = newSink(t, networkSyslog({ protocol: 'tcp', address: `127.0.0.1:${bound.socket.port}`, tag: 'pp' }));
  sink.write(message('waits'), 'info');
  await waitFor(() => context.reports.length === 1, 'the failure report');
  t.regex(context.reports[0]!.message, /cannot send to test: .*ECONNREFUSED/);
  t.is(context.drops.size, 0, 'the event waits in the queue');
});

test('a malformed address is an error when the sink is set up', (t) => {
  const error = t.throws(() => networkSyslog({ protocol: 'udp', address: 'localhost', tag: 'pp' }), { instanceOf: PacketPonyError });
  t.regex(error!.message, /logging\.syslog\.address: .*missing port/);
});

test('unix: glibc-style datagrams; a receiver that goes away and comes back gets events again', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pp-devlog-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'log');
  const received: string[] = [];
  const listen = () => unixReceiver(t, path, (buffer) => received.push(buffer.toString()));
  let receiver = listen();
  const { sink, context } = newSink(t, unixSyslog({ path, tag: 'ppunix' }));
  sink.write(tcpClose({ event_type: 'open' }), 'info');
  await waitFor(() => received.length === 1, 'one datagram');
  t.regex(received[0]!, new RegExp(`^<30>[A-Z][a-z]{2} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d ppunix\\[${process.pid}\\]: listener=web proto=tcp event=open src=192\\.168\\.1\\.50:12345 dst=192\\.168\\.1\\.100:80$`));

  receiver.close();
  rmSync(path);
  sink.write(message('while away'), 'info');
  await waitFor(() => context.reports.length === 1, 'the failure report');
  t.regex(context.reports[0]!.message, /ECONNREFUSED|ENOENT/);
  receiver = listen();
  await waitFor(() => received.length === 2, 'the event held while the receiver was away');
  t.regex(received[1]!, /ppunix\[\d+\]: while away$/);
});

test('unix: a missing socket path is retried, not fatal', async (t) => {
  const { sink, context } = newSink(t, unixSyslog({ path: join(tmpdir(), `pp-none-${process.pid}`, 'log'), tag: 'pp' }));
  sink.write(message('x'), 'info');
  await waitFor(() => context.reports.length === 1, 'the failure report');
  t.regex(context.reports[0]!.message, /cannot connect to .*ENOENT/);
});

test('unix: a receiver whose queue is full holds the messages (EAGAIN) and gets all of them, in order, once it reads', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pp-devlog-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'log');
  const calls = nativeUnixDatagrams.calls()!;
  // Bound but not read from yet: its queue (net.unix.max_dgram_qlen, 10 by default) fills up.
  const receiver = new UnixDatagramSocket(calls);
  t.teardown(() => receiver.close());
  t.is(receiver.bind(path), null);
  const { sink, context } = newSink(t, unixSyslog({ path, tag: 'ppfull' }));
  const count = 50;
  for (let i = 0; i < count; i++) sink.write(message(`m${i}`), 'info');
  // The queue is full once a datagram of our own is refused; those that got in are left out below.
  const probe = new UnixDatagramSocket(calls);
  t.teardown(() => probe.close());
  await waitFor(() => probe.send(Buffer.from('probe'), path) === 'EAGAIN', 'the receiver\'s queue to be full');

  const received: string[] = [];
  const buffer = Buffer.alloc(4096);
  receiver.onReadable(() => {
    for (let n = receiver.receive(buffer); typeof n === 'number'; n = receiver.receive(buffer)) {
      const text = buffer.toString('utf8', 0, n);
      if (text !== 'probe') received.push(text);
    }
  });
  await waitFor(() => received.length === count || undefined, `all ${count} messages`);
  t.deepEqual(received.map((line) => /: (m\d+)$/.exec(line)?.[1]), Array.from({ length: count }, (_, i) => `m${i}`));
  t.deepEqual(context.reports, [], 'a full queue is no failure');
  t.is(context.drops.size, 0);
});

test('unix: without the native addon the sink cannot be set up, and the error names the sink and why', (t) => {
  const missing: UnixDatagramSource = { calls: () => null, missing: () => 'stand-in: dist/src/native/abi-0/packetpony_native.node is not there' };
  const error = t.throws(() => unixSyslog({ path: '/dev/log', tag: 'pp', source: missing }), { instanceOf: LogSinkError });
  t.is(error!.code, 'PP_ERR_LOG_SINK');
  t.is(
    error!.message,
    'logging.syslog: cannot use the unix socket /dev/log: the native addon is not built (stand-in: dist/src/native/abi-0/packetpony_native.node is not there); ' +
      'build it with npm run build (it needs a C compiler), or log to syslog over udp or tcp',
  );
});
