/**
 * Live reconfiguration of a running daemon: files dropped, edited and removed in conf.d, SIGHUP,
 * and a reload under load that must not refuse a single connection.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { startDaemon } from '../helpers/daemon.js';
import { connect, readAll, sha256, startEchoServer, startExchangeServer } from '../helpers/servers.js';
import { waitFor } from '../helpers/wait-for.js';

function listenerFile(target: string, extra = '', listen = '127.0.0.1:0'): string {
  return `protocol: tcp\nlisten_address: "${listen}"\ntarget_address: "${target}"\nallowlist: ["127.0.0.0/8", "::1"]\n${extra}`;
}

/** A backend that answers every connection with its own tag, so tests see which target served. */
async function taggedServer(t: Parameters<typeof startEchoServer>[0], tag: string): Promise<number> {
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.end(tag);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  return (server.address() as net.AddressInfo).port;
}

async function fetchTag(port: number): Promise<string> {
  const socket = await connect(port);
  const data = readAll(socket);
  socket.end();
  return (await data).toString();
}

/** Connects and reports whether the daemon accepted (data flows) or refused/reset the attempt. */
function attempt(port: number, localAddress = '127.0.0.1'): Promise<'served' | 'refused'> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    socket.on('connect', () => socket.write('ping'));
    socket.on('error', () => resolve('refused'));
    socket.on('data', () => {
      socket.destroy();
      resolve('served');
    });
    socket.on('close', () => resolve('refused'));
  });
}

function reloads(lines: string[]): number {
  return lines.filter((l) => l.includes('configuration reloaded')).length;
}

test('a file dropped into conf.d goes live; removing it stops the listener', async (t) => {
  const a = await taggedServer(t, 'A');
  const daemon = await startDaemon(t, { 'conf.d/first.yaml': listenerFile(`127.0.0.1:${a}`) });
  await daemon.port('first');
  const firstPid = await daemon.childPid('first');
  writeFileSync(join(daemon.dir, 'conf.d/second.yaml'), listenerFile(`127.0.0.1:${a}`));
  const port = await daemon.port('second');
  t.is(await fetchTag(port), 'A');
  t.regex(await daemon.waitForLine(/configuration reloaded .*added=1/), /result=ok/);

  rmSync(join(daemon.dir, 'conf.d/second.yaml'));
  await daemon.waitForLine(/listener second removed/);
  await waitFor(async () => (await attempt(port)) === 'refused' || undefined, 'the removed listener to refuse');
  t.is(await fetchTag(await daemon.port('first')), 'A', 'the other listener is untouched');
  t.is(await daemon.childPid('first'), firstPid, 'same child: not restarted by the reloads');
});

test('a changed address binds the new one and drains the old', async (t) => {
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, { 'conf.d/web.yaml': listenerFile(`127.0.0.1:${echo}`) });
  const oldPort = await daemon.port('web');
  const open = await connect(oldPort);
  const openData = readAll(open);
  open.write('old address, ');
  await daemon.waitForLine(/Connection opened: listener=web/);

  const from = daemon.lines.length;
  writeFileSync(join(daemon.dir, 'conf.d/web.yaml'), listenerFile(`127.0.0.1:${echo}`, '', '[::1]:0'));
  const up = await daemon.waitForLine(/listener web up /, 30_000, from);
  const newPort = Number(/address=\S*:(\d+)/.exec(up)![1]);
  const socket = await connect(newPort, '::1');
  const back = readAll(socket);
  socket.end('new address');
  t.is((await back).toString(), 'new address');
  await waitFor(async () => (await attempt(oldPort)) === 'refused' || undefined, 'the old address to refuse');
  open.end('still open');
  t.is((await openData).toString(), 'old address, still open');
});

test('a changed target applies to new connections; the open one stays on the old target', async (t) => {
  const echo = await startEchoServer(t);
  const b = await taggedServer(t, 'B');
  const daemon = await startDaemon(t, { 'conf.d/web.yaml': listenerFile(`127.0.0.1:${echo}`) });
  const port = await daemon.port('web');
  const open = await connect(port);
  const openData = readAll(open);
  open.write('on the old target, ');
  await daemon.waitForLine(/Connection opened: listener=web/);

  writeFileSync(join(daemon.dir, 'conf.d/web.yaml'), listenerFile(`127.0.0.1:${b}`));
  await daemon.waitForLine(/listener web reconfigured/);
  t.is(await fetchTag(port), 'B');
  open.end('still');
  t.is((await openData).toString(), 'on the old target, still');
});

test('changed limits apply; an invalid file keeps the last good version until it is fixed', async (t) => {
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, { 'conf.d/web.yaml': listenerFile(`127.0.0.1:${echo}`, 'rate_limits:\n  max_connections_per_ip: 1\n') });
  const port = await daemon.port('web');
  const held = await connect(port);
  t.teardown(() => held.destroy());
  await daemon.waitForLine(/Connection opened: listener=web/);
  t.is(await attempt(port), 'refused', 'one connection per address');

  writeFileSync(join(daemon.dir, 'conf.d/web.yaml'), listenerFile(`127.0.0.1:${echo}`, 'rate_limits:\n  max_connections_per_ip: 2\n'));
  await daemon.waitForLine(/listener web reconfigured/);
  const second = await connect(port);
  second.write('x');
  await new Promise((resolve) => second.once('data', resolve));
  second.destroy();

  const from = daemon.lines.length;
  writeFileSync(join(daemon.dir, 'conf.d/web.yaml'), listenerFile(`127.0.0.1:${echo}`, 'rate_limits:\n  max_connections_per_ip: zero\n'));
  const error = await daemon.waitForLine(/config: conf\.d\/web\.yaml:6:27: rate_limits\.max_connections_per_ip: must be a whole number/, 10_000, from);
  t.truthy(error);
  await daemon.waitForLine(/listener web: its file has errors; the last good version keeps running/, 10_000, from);
  await daemon.waitForLine(/configuration reloaded .*result=partial/, 10_000, from);
  const third = await connect(port);
  third.write('y');
  await new Promise((resolve) => third.once('data', resolve));
  third.destroy();

  writeFileSync(join(daemon.dir, 'conf.d/web.yaml'), listenerFile(`127.0.0.1:${echo}`, 'rate_limits:\n  max_connections_per_ip: 1\n'));
  await daemon.waitForLine(/listener web reconfigured/, 10_000, from);
  await daemon.waitForLine(/configuration reloaded .*result=ok/, 10_000, from);
  t.is(await attempt(port), 'refused', 'the fixed file applies: back to one per address');
});

test('editor leftovers in conf.d never trigger a reload', async (t) => {
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, { 'conf.d/web.yaml': listenerFile(`127.0.0.1:${echo}`) });
  await daemon.port('web');
  for (const name of ['.web.yaml.swp', 'web.yaml~', '#web.yaml#', 'web.yaml.bak', 'web.yaml.dpkg-dist']) {
    writeFileSync(join(daemon.dir, 'conf.d', name), 'protocol: [not yaml');
  }
  // A real change afterwards: exactly one reload, and it is about that file.
  writeFileSync(join(daemon.dir, 'conf.d/other.yaml'), listenerFile(`127.0.0.1:${echo}`));
  await daemon.port('other');
  await daemon.waitForLine(/configuration reloaded/);
  t.is(reloads(daemon.lines), 1);
  t.regex(daemon.lines.find((l) => l.includes('configuration reloaded'))!, /other\.yaml/);
  t.false(daemon.lines.some((l) => l.includes('[ERROR]')));
});

test('SIGHUP after editing the main file re-reads everything', async (t) => {
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, { 'conf.d/web.yaml': listenerFile(`127.0.0.1:${echo}`) });
  await daemon.port('web');
  // The watcher reloads on the edit too; SIGHUP then re-reads it at once, whatever the watcher did.
  writeFileSync(join(daemon.dir, 'packetpony.yaml'), 'logging:\n  stdout:\n    enabled: true\ndefaults:\n  rate_limits:\n    max_connections_per_ip: 1\n');
  process.kill(daemon.pid, 'SIGHUP');
  await daemon.waitForLine(/configuration reloaded \(SIGHUP\)/);
  await waitFor(() => daemon.lines.some((l) => l.includes('listener web reconfigured')), 'the listener to take the new defaults');
  const port = await daemon.port('web');
  const held = await connect(port);
  t.teardown(() => held.destroy());
  await daemon.waitForLine(/Connection opened: listener=web/);
  t.is(await attempt(port), 'refused', 'the default from the main file applies');
});

test('a main file with errors keeps the whole running configuration', async (t) => {
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, { 'conf.d/web.yaml': listenerFile(`127.0.0.1:${echo}`) });
  const port = await daemon.port('web');
  writeFileSync(join(daemon.dir, 'packetpony.yaml'), 'server:\n  shutdown_timeout: 30\n');
  rmSync(join(daemon.dir, 'conf.d/web.yaml'));
  await daemon.waitForLine(/rejected: the main file has errors/);
  t.truthy(daemon.lines.find((l) => /config: packetpony\.yaml:2:21: server\.shutdown_timeout/.test(l)));
  t.is(await attempt(port), 'served');
});

test('under load, ten limit changes refuse nothing, cut nothing, and hand no one a fresh quota', async (t) => {
  const echo = await startEchoServer(t);
  const bulk = await startExchangeServer(t, 4 * 1024 * 1024);
  const limits = (i: number): string =>
    `rate_limits:\n  max_connections_per_ip: 5\n  max_total_connections: ${1000 + i}\n  max_bandwidth_per_ip: "${1000 + i}MB"\n  bandwidth_window: "1m"\n`;
  const daemon = await startDaemon(t, {
    'packetpony.yaml': 'logging:\n  stdout:\n    enabled: true\nserver:\n  shutdown_timeout: "2m"\n',
    'conf.d/web.yaml': listenerFile(`127.0.0.1:${echo}`, limits(0)),
    'conf.d/bulk.yaml': listenerFile(`127.0.0.1:${bulk.port}`, limits(0).replace('max_connections_per_ip: 5', 'max_connections_per_ip: 50')),
  });
  const port = await daemon.port('web');
  const bulkPort = await daemon.port('bulk');

  // 127.0.0.2 exhausts its per-address cap before the reloads.
  const hogs = await Promise.all(Array.from({ length: 5 }, async () => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' });
    socket.on('error', () => {});
    await new Promise((resolve) => socket.once('connect', resolve));
    return socket;
  }));
  t.teardown(() => hogs.forEach((s) => s.destroy()));
  await waitFor(() => daemon.lines.filter((l) => /Connection opened: listener=web protocol=tcp src=127\.0\.0\.2/.test(l)).length === 5 || undefined, 'five connections from 127.0.0.2');
  t.is(await attempt(port, '127.0.0.2'), 'refused', 'exhausted before the reloads');

  // One long transfer through the bulk listener, slowed by reading in small steps.
  const upload = randomBytes(4 * 1024 * 1024);
  const long = await connect(bulkPort);
  const longData = readAll(long);
  long.write(upload.subarray(0, 1024 * 1024));

  // A new connection every 20 ms, each checked for its echo.
  let stop = false;
  let served = 0;
  const refused: string[] = [];
  const prober = (async () => {
    for (let i = 0; !stop && i < 5000; i++) {
      const outcome = await new Promise<string>((resolve) => {
        const socket = net.connect(port, '127.0.0.1');
        socket.setTimeout(10_000, () => {
          socket.destroy();
          resolve('timeout');
        });
        socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
        socket.on('data', () => {
          socket.destroy();
          resolve('served');
        });
        socket.on('connect', () => socket.write('ping'));
      });
      if (outcome === 'served') served++;
      else refused.push(outcome);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();

  for (let i = 1; i <= 10; i++) {
    const from = daemon.lines.length;
    writeFileSync(join(daemon.dir, 'conf.d/web.yaml'), listenerFile(`127.0.0.1:${echo}`, limits(i)));
    writeFileSync(join(daemon.dir, 'conf.d/bulk.yaml'), listenerFile(`127.0.0.1:${bulk.port}`, limits(i).replace('max_connections_per_ip: 5', 'max_connections_per_ip: 50')));
    await daemon.waitForLine(/configuration reloaded/, 20_000, from);
    long.write(upload.subarray((i - 1) * 300_000 + 1024 * 1024, i * 300_000 + 1024 * 1024));
  }
  long.end(upload.subarray(10 * 300_000 + 1024 * 1024));
  stop = true;
  await prober;

  t.log(`${served} connections served during the reloads, ${refused.length} refused`);
  t.deepEqual(refused, []);
  t.true(served > 0);
  const received = await longData;
  await waitFor(() => bulk.connections[0], 'the bulk connection');
  t.is(sha256(received), bulk.connections[0]!.sentSha256, 'the long download is intact');
  t.is((await bulk.connections[0]!.received).receivedSha256, sha256(upload), 'the long upload is intact');
  t.is(await attempt(port, '127.0.0.2'), 'refused', 'still exhausted after ten reloads');
  t.is(reloads(daemon.lines), 10);
});
