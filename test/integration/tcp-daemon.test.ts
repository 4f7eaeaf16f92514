/**
 * The daemon end to end over TCP: real supervisor and child processes, loopback only.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { startDaemon } from '../helpers/daemon.js';
import { connect, readAll, refusingPort, sha256, startEchoServer, startExchangeServer } from '../helpers/servers.js';
import { alive, waitFor } from '../helpers/wait-for.js';

function listenerFile(target: string, extra = '', listen = '127.0.0.1:0'): string {
  return `protocol: tcp\nlisten_address: "${listen}"\ntarget_address: "${target}"\nallowlist: ["127.0.0.0/8", "::1"]\n${extra}`;
}

test('8 MB of random data each way arrives intact', async (t) => {
  const backend = await startExchangeServer(t, 8 * 1024 * 1024);
  const daemon = await startDaemon(t, { 'conf.d/bulk.yaml': listenerFile(`127.0.0.1:${backend.port}`) });
  const port = await daemon.port('bulk');
  const upload = randomBytes(8 * 1024 * 1024);
  const socket = await connect(port);
  const download = readAll(socket);
  socket.end(upload);
  const received = await download;
  await waitFor(() => backend.connections[0], 'the backend connection');
  const atBackend = await backend.connections[0]!.received;
  t.is(received.length, 8 * 1024 * 1024);
  t.is(sha256(received), backend.connections[0]!.sentSha256);
  t.is(atBackend.receivedBytes, upload.length);
  t.is(atBackend.receivedSha256, sha256(upload));
  const close = await daemon.waitForLine(/Connection closed: listener=bulk/);
  t.regex(close, /bytes_sent=8388608 bytes_recv=8388608/);
});

test('100 concurrent connections each get their own bytes back', async (t) => {
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, { 'conf.d/echo.yaml': listenerFile(`127.0.0.1:${echo}`) });
  const port = await daemon.port('echo');
  const results = await Promise.all(
    Array.from({ length: 100 }, async (_, i) => {
      const payload = Buffer.from(`connection ${i} ${randomBytes(16).toString('hex')}`.repeat(50));
      const socket = await connect(port);
      const back = readAll(socket);
      socket.end(payload);
      return (await back).equals(payload);
    }),
  );
  t.is(results.filter(Boolean).length, 100);
  await waitFor(() => daemon.lines.filter((l) => l.includes('Connection closed: listener=echo')).length === 100 || undefined, '100 close events');
});

test('half-close: the client ends its side and still gets the reply sent after its FIN', async (t) => {
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => socket.end(`got ${Buffer.concat(chunks).length} bytes after your FIN`));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const daemon = await startDaemon(t, { 'conf.d/half.yaml': listenerFile(`127.0.0.1:${(server.address() as net.AddressInfo).port}`) });
  const socket = await connect(await daemon.port('half'));
  const reply = readAll(socket);
  socket.end('twelve bytes');
  t.is((await reply).toString(), 'got 12 bytes after your FIN');
});

test('IPv6 on both sides', async (t) => {
  const echo = await startEchoServer(t, '::1');
  const daemon = await startDaemon(t, { 'conf.d/v6.yaml': listenerFile(`[::1]:${echo}`, '', '[::1]:0') });
  const socket = await connect(await daemon.port('v6'), '::1');
  const back = readAll(socket);
  socket.end('over IPv6');
  t.is((await back).toString(), 'over IPv6');
  t.regex(await daemon.waitForLine(/Connection closed: listener=v6/), /src=\[::1\]:\d+ dst=\[::1\]:\d+/);
});

test('a target that refuses: the client is closed at once and an error event names the reason', async (t) => {
  const dead = await refusingPort(t);
  const daemon = await startDaemon(t, { 'conf.d/dead.yaml': listenerFile(`127.0.0.1:${dead}`) });
  // The reset may even beat the client's own connect callback on loopback.
  const socket = net.connect(await daemon.port('dead'), '127.0.0.1');
  const ended = await new Promise<string>((resolve) => {
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    socket.on('close', () => resolve('closed'));
  });
  t.true(['ECONNRESET', 'closed'].includes(ended), ended);
  const line = await daemon.waitForLine(/Connection failed: listener=dead/);
  t.regex(line, new RegExp(`dst=127\\.0\\.0\\.1:${dead} error=".*ECONNREFUSED`));
});

test('a client that stops reading makes the target block, not the child buffer', async (t) => {
  let written = 0;
  let blocked = false;
  const chunk = Buffer.alloc(256 * 1024, 7);
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    const pump = (): void => {
      while (socket.write(chunk)) written += chunk.length;
      written += chunk.length;
      blocked = true;
      socket.once('drain', () => {
        blocked = false;
        pump();
      });
    };
    pump();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const daemon = await startDaemon(t, { 'conf.d/slow.yaml': listenerFile(`127.0.0.1:${(server.address() as net.AddressInfo).port}`) });
  const socket = await connect(await daemon.port('slow'));
  socket.pause(); // never reads
  t.teardown(() => socket.destroy());
  // With backpressure the target's writes stall once the kernel buffers and the relay's one buffer
  // per direction are full; without it the child would read (and hold) everything forever.
  await waitFor(() => blocked && written > 0, 'the target to be blocked', 20_000);
  const rss = Number(/VmRSS:\s+(\d+)/.exec((await import('node:fs')).readFileSync(`/proc/${await daemon.childPid('slow')}/status`, 'utf8'))![1]) * 1024;
  t.log(`target wrote ${(written / 1048576).toFixed(1)} MB before blocking; child RSS ${(rss / 1048576).toFixed(0)} MB`);
  t.true(written < 64 * 1024 * 1024, `the target wrote ${written} bytes`);
});

test('a child killed with SIGKILL comes back, while another listener keeps its open connection', async (t) => {
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, {
    'conf.d/victim.yaml': listenerFile(`127.0.0.1:${echo}`),
    'conf.d/bystander.yaml': listenerFile(`127.0.0.1:${echo}`),
  });
  const victimPort = await daemon.port('victim');
  const bystander = await connect(await daemon.port('bystander'));
  const echoOnce = (socket: net.Socket, text: string): Promise<string> =>
    new Promise((resolve) => {
      socket.once('data', (d: Buffer) => resolve(d.toString()));
      socket.write(text);
    });
  t.is(await echoOnce(bystander, 'before'), 'before');

  const firstPid = await daemon.childPid('victim');
  const bystanderPid = await daemon.childPid('bystander');
  process.kill(firstPid, 'SIGKILL');
  t.regex(await daemon.waitForLine(/listener victim: child was killed by SIGKILL; restarting in 100 ms/), /listener=victim/);
  await waitFor(async () => (await daemon.childPid('victim')) !== firstPid, 'a new victim child');

  const socket = await connect(victimPort);
  const back = readAll(socket);
  socket.end('after restart');
  t.is((await back).toString(), 'after restart');
  t.is(await echoOnce(bystander, 'still here'), 'still here');
  t.is(await daemon.childPid('bystander'), bystanderPid);
  bystander.end();
});

test('the supervisor killed with SIGKILL leaves no child behind', async (t) => {
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, { 'conf.d/a.yaml': listenerFile(`127.0.0.1:${echo}`), 'conf.d/b.yaml': listenerFile(`127.0.0.1:${echo}`) });
  const pids = [await daemon.childPid('a'), await daemon.childPid('b')];
  const port = await daemon.port('a');
  process.kill(daemon.pid, 'SIGKILL');
  await daemon.exited;
  await waitFor(() => pids.every((pid) => !alive(pid)), 'both children to exit', 5000);
  const refused = await new Promise<string>((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('connect', () => resolve('connected'));
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
  });
  t.is(refused, 'ECONNREFUSED', 'no orphan keeps the port');
});

test('SIGTERM: new connections are refused, the open one completes, exit code 0', async (t) => {
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, { 'conf.d/web.yaml': listenerFile(`127.0.0.1:${echo}`) });
  const port = await daemon.port('web');
  const open = await connect(port);
  const everything = readAll(open);
  open.write('first half, ');
  await daemon.waitForLine(/Connection opened: listener=web/);

  process.kill(daemon.pid, 'SIGTERM');
  await daemon.waitForLine(/SIGTERM received/);
  await waitFor(
    () =>
      new Promise<boolean>((resolve) => {
        const probe = net.connect(port, '127.0.0.1');
        probe.on('connect', () => {
          probe.destroy();
          resolve(false);
        });
        probe.on('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED'));
      }),
    'new connections to be refused',
  );
  open.end('second half');
  t.is((await everything).toString(), 'first half, second half');
  const { code } = await daemon.exited;
  t.is(code, 0);
  t.true(daemon.lines.some((l) => /Connection closed: listener=web .*bytes_sent=23 bytes_recv=23/.test(l)));
  t.regex(daemon.lines[daemon.lines.length - 1]!, /packetpony stopped/);
});

test('a taken port is reported once with a hint; the other listener runs; it comes up when freed', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const takenPort = (blocker.address() as net.AddressInfo).port;
  t.teardown(() => blocker.close());
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, {
    'conf.d/blocked.yaml': listenerFile(`127.0.0.1:${echo}`, '', `127.0.0.1:${takenPort}`),
    'conf.d/free.yaml': listenerFile(`127.0.0.1:${echo}`),
  });
  const error = await daemon.waitForLine(/listener blocked: cannot listen/);
  t.regex(error, new RegExp(`127\\.0\\.0\\.1:${takenPort}/tcp: EADDRINUSE: another program holds the address`));
  await daemon.port('free');
  await new Promise<void>((resolve) => blocker.close(() => resolve()));
  t.is(await daemon.port('blocked', 60_000), takenPort);
  t.is(daemon.lines.filter((l) => l.includes('listener blocked: cannot listen')).length, 1, 'reported once');
});

test('at the shutdown deadline the connections still open are closed and logged; exit code 0', async (t) => {
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': 'logging:\n  stdout:\n    enabled: true\nserver:\n  shutdown_timeout: "1s"\n',
    'conf.d/web.yaml': listenerFile(`127.0.0.1:${echo}`),
  });
  const socket = await connect(await daemon.port('web'));
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  socket.write('never ends');
  await daemon.waitForLine(/Connection opened: listener=web/);
  process.kill(daemon.pid, 'SIGTERM');
  await closed;
  const { code } = await daemon.exited;
  t.is(code, 0);
  t.true(daemon.lines.some((l) => /Connection closed: listener=web .*bytes_sent=10 bytes_recv=10 error="shutdown: shutdown_timeout reached"/.test(l)), daemon.lines.join('\n'));
});

test('a second SIGINT stops at once, without draining', async (t) => {
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': 'logging:\n  stdout:\n    enabled: true\nserver:\n  shutdown_timeout: "10m"\n',
    'conf.d/web.yaml': listenerFile(`127.0.0.1:${echo}`),
  });
  const childPid = await daemon.childPid('web');
  const socket = await connect(await daemon.port('web'));
  socket.on('error', () => {});
  socket.write('held open');
  await daemon.waitForLine(/Connection opened: listener=web/);
  process.kill(daemon.pid, 'SIGINT');
  await daemon.waitForLine(/SIGINT received/);
  process.kill(daemon.pid, 'SIGINT');
  const { code } = await daemon.exited;
  t.is(code, 130);
  t.truthy(await daemon.waitForLine(/second SIGINT: stopping now without draining/));
  await waitFor(() => !alive(childPid), 'the child to be gone', 5000);
});
