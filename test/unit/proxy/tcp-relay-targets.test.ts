/**
 * The TCP relay's set-up options for several targets and the PROXY protocol, on real loopback
 * sockets: a header written before any client byte (and not counted), failover on a refusal, on a
 * per-target timeout and on a name that does not resolve, and connect_timeout still bounding the
 * whole dial. Conditions are awaited with deadlines; nothing is timed.
 */
import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import type { Endpoint, TcpSettings } from '../../../src/config/types.js';
import { startTcpRelay, type RelayCloseInfo, type RelayOpenInfo, type TcpRelayOptions } from '../../../src/proxy/tcp-relay.js';
import { ResolveError, TargetResolver } from '../../../src/proxy/target-resolver.js';
import { ListenerStats } from '../../../src/telemetry/stats.js';
import { listenEnds, refusingPort } from '../../helpers/servers.js';
import { waitFor } from '../../helpers/wait-for.js';
import { silentPort } from '../../helpers/reliability/dead-backends.js';

const TCP: TcpSettings = { connect_timeout: 5000, read_timeout: 0, write_timeout: 0, idle_timeout: 0 };

/** An echo backend that records everything it received per connection. */
async function recordingEcho(t: ExecutionContext): Promise<{ port: number; received: Buffer[][] }> {
  const received: Buffer[][] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const chunks: Buffer[] = [];
    received.push(chunks);
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      socket.write(chunk);
    });
    socket.on('end', () => socket.end());
  });
  t.teardown(() => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  }));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, received };
}

interface Run {
  readonly port: number;
  readonly stats: ListenerStats;
  readonly opens: RelayOpenInfo[];
  readonly closes: RelayCloseInfo[];
  readonly reasons: string[];
}

/** A listener relaying to `first`, then through `next` (the failover list), with `extra` options. */
async function relayServer(
  t: ExecutionContext,
  first: Endpoint,
  next: Endpoint[] | null,
  extra: Partial<TcpRelayOptions<undefined>> = {},
): Promise<Run> {
  const run = { port: 0, stats: new ListenerStats(), opens: [] as RelayOpenInfo[], closes: [] as RelayCloseInfo[], reasons: [] as string[] };
  const relays = new Set<{ destroy(): void }>();
  t.teardown(() => {
    for (const relay of relays) relay.destroy();
  });
  const port = await listenEnds(t, (client) => {
    const queue = next === null ? null : [...next];
    const relay = startTcpRelay({
      client,
      target: first,
      tcp: TCP,
      stats: run.stats,
      ...(queue === null
        ? {}
        : {
            failover: (_relay: unknown, reason: string) => {
              run.reasons.push(reason);
              return queue.shift();
            },
          }),
      ...extra,
      onOpen: (_r, info) => run.opens.push(info),
      onClose: (r, info) => {
        relays.delete(r);
        run.closes.push(info);
      },
    });
    relays.add(relay);
  });
  return { ...run, port };
}

/** Connects, sends `text`, and resolves with the echo (or '' when the connection is reset). */
function exchange(t: ExecutionContext, port: number, text: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    t.teardown(() => void socket.destroy());
    let got = '';
    socket.on('connect', () => socket.write(text));
    socket.on('data', (chunk: Buffer) => {
      got += chunk.toString();
      if (got.length >= text.length) {
        socket.end();
        resolve(got);
      }
    });
    socket.on('error', () => resolve(got));
    socket.on('close', () => resolve(got));
  });
}

const local = (port: number): Endpoint => ({ host: '127.0.0.1', port });

test('header: written to the target before the client data, and not counted as client bytes', async (t) => {
  const echo = await recordingEcho(t);
  const header = Buffer.from('PROXY TCP4 192.0.2.1 127.0.0.1 5000 80\r\n');
  const run = await relayServer(t, local(echo.port), null, { header });
  // The echo sends the header back too: the client sees it, which shows it went first.
  t.is(await exchange(t, run.port, 'hello'), `${header.toString()}hello`);
  await waitFor(() => run.closes.length === 1, 'the relay to close');
  t.is(Buffer.concat(echo.received[0]!).toString(), `${header.toString()}hello`);
  t.is(run.closes[0]!.bytes_sent, 5);
});

test('header: also when the client sent its data before the target accepted', async (t) => {
  const echo = await recordingEcho(t);
  const run = await relayServer(t, local(echo.port), null, { header: Buffer.from('HDR|') });
  const socket = net.connect(run.port, '127.0.0.1');
  t.teardown(() => void socket.destroy());
  socket.end('early data');
  await waitFor(() => echo.received[0] !== undefined && Buffer.concat(echo.received[0]).toString() === 'HDR|early data', 'header then the early data');
  t.pass();
});

test('failover: a refusing target is skipped for the next one; the reason names the refusal', async (t) => {
  const refused = await refusingPort(t);
  const echo = await recordingEcho(t);
  const run = await relayServer(t, local(refused), [local(echo.port)]);
  t.is(await exchange(t, run.port, 'ping'), 'ping');
  t.is(run.opens[0]!.target_port, echo.port);
  t.is(run.reasons.length, 1);
  t.regex(run.reasons[0]!, new RegExp(`connect to 127\\.0\\.0\\.1:${refused} failed: connection refused`));
  t.is(run.stats.takeDelta().errors.target_connect, undefined, 'a failover is not a failed dial');
});

test('failover: a target that does not answer is given up after attemptTimeoutMs', async (t) => {
  const silent = await silentPort(t);
  const echo = await recordingEcho(t);
  const run = await relayServer(t, local(silent), [local(echo.port)], { attemptTimeoutMs: 200 });
  t.is(await exchange(t, run.port, 'ping'), 'ping');
  t.regex(run.reasons[0]!, new RegExp(`connect to 127\\.0\\.0\\.1:${silent} timed out after 200 ms`));
});

test('failover: a name that does not resolve is skipped', async (t) => {
  const echo = await recordingEcho(t);
  const resolver = new TargetResolver({ lookup: (_host, callback) => callback(Object.assign(new Error('nope'), { code: 'ENOTFOUND' }), []) });
  const run = await relayServer(t, { host: 'gone.invalid', port: 80 }, [local(echo.port)], { resolver });
  t.is(await exchange(t, run.port, 'ping'), 'ping');
  t.is(run.reasons[0]!, new ResolveError('gone.invalid', 'ENOTFOUND').message);
});

test('failover: when no target is left the dial fails with the last reason', async (t) => {
  const a = await refusingPort(t);
  const b = await refusingPort(t);
  const run = await relayServer(t, local(a), [local(b)]);
  t.is(await exchange(t, run.port, 'ping'), '');
  await waitFor(() => run.closes.length === 1, 'the relay to close');
  const info = run.closes[0]!;
  t.is(info.cause, 'dial_failed');
  t.false(info.opened);
  t.is(info.target_port, b);
  t.regex(info.error!, new RegExp(`127\\.0\\.0\\.1:${b} failed: connection refused`));
  t.is(run.reasons.length, 2);
  t.is(run.stats.takeDelta().errors.target_connect, 1);
});

test('failover: connect_timeout still bounds the whole dial', async (t) => {
  const silent1 = await silentPort(t);
  const silent2 = await silentPort(t);
  const run = await relayServer(t, local(silent1), [local(silent2)], {
    tcp: { ...TCP, connect_timeout: 300 },
    attemptTimeoutMs: 200,
  });
  t.is(await exchange(t, run.port, 'ping'), '');
  await waitFor(() => run.closes.length === 1, 'the relay to close');
  t.is(run.closes[0]!.cause, 'dial_failed');
  t.regex(run.closes[0]!.error!, /timed out after 300 ms/);
  t.is(run.reasons.length, 1, 'the second target got what was left of connect_timeout');
});
