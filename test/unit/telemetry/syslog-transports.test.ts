/** The real syslog transports against receivers on loopback and in a temp folder. */
import test from 'ava';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { PacketPonyError } from '../../../src/errors.js';
import { RetryDelay } from '../../../src/telemetry/sinks/retry-delay.js';
import { networkSyslog } from '../../../src/telemetry/sinks/syslog-network.js';
import { SyslogSink, type SyslogConnect } from '../../../src/telemetry/sinks/syslog-sink.js';
import { unixSyslog } from '../../../src/telemetry/sinks/syslog-unix.js';
import { waitFor } from '../../helpers/wait-for.js';
import { message, recordingContext, tcpClose } from './fixtures.js';

interface UnixReceiver {
  bind(path: string): void;
  close(): void;
  on(event: 'message', listener: (buffer: Buffer) => void): void;
  on(event: 'error', listener: (error: Error) => void): void;
}
const unixDgram = createRequire(import.meta.url)('unix-dgram') as { createSocket(type: 'unix_dgram'): UnixReceiver };

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
  const listen = (): UnixReceiver => {
    const receiver = unixDgram.createSocket('unix_dgram');
    receiver.on('message', (buffer) => received.push(buffer.toString()));
    receiver.on('error', () => {});
    receiver.bind(path);
    return receiver;
  };
  let receiver = listen();
  t.teardown(() => receiver.close());
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
