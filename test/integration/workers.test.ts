/**
 * `workers:` (issue 23): one listener served by several child processes, real daemons over
 * loopback. Clients are different loopback source addresses (127.0.x.y); which worker serves an
 * address is read off the workers' own descriptors (/proc/PID/fd against /proc/net/tcp), not assumed.
 */
import test, { type ExecutionContext } from 'ava';
import { readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type net from 'node:net';
import { startDaemon, type Daemon } from '../helpers/daemon.js';
import { MAIN_FILE_WITH_METRICS, readSample, waitForSample } from '../helpers/metrics.js';
import { startCountingEchoServer } from '../helpers/servers.js';
import { startUdpBackend, udpClient, type UdpClient } from '../helpers/udp.js';
import { slots } from '../helpers/slots.js';
import { attempt, hangUp } from '../helpers/tcp-clients.js';
import { alive, waitFor } from '../helpers/wait-for.js';
import { workerForAddress } from '../../src/platform/reuseport.js';
import { workersSupported } from '../../src/supervisor/listener-group.js';

const slot = slots(2);
const maybe = workersSupported() ? test.serial : test.skip;

function listener(target: string, workers: number | string, limits = ''): string {
  const rate = limits ? `rate_limits:\n${limits.replace(/^/gm, '  ')}\n` : '';
  return `protocol: tcp\nlisten_address: "127.0.0.1:0"\ntarget_address: "${target}"\nallowlist: ["127.0.0.0/8"]\nworkers: ${workers}\n${rate}`;
}

/** The PIDs of the listener's workers from their latest "up" lines, by worker number. */
async function workerPids(daemon: Daemon, name: string, count: number, from = 0): Promise<number[]> {
  return waitFor(() => {
    const pids: number[] = [];
    for (let i = 1; i <= count; i++) {
      const ups = daemon.lines.slice(from).filter((l) => l.includes(`listener ${name}/${i} up `));
      if (ups.length === 0) return undefined;
      pids.push(Number(/pid=(\d+)/.exec(ups[ups.length - 1]!)![1]));
    }
    return pids;
  }, `${count} workers of ${name} up`, 30_000);
}

/**
 * The connections a process has accepted on `port`: its descriptors that are established TCP
 * sockets with that local port (/proc/net/tcp gives each socket's inode and addresses). Exact
 * where counting descriptors is not: a worker opens and closes others of its own.
 */
function acceptedOn(pid: number, port: number): number {
  const inodes = new Set<string>();
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      // local_address, rem_address, st (01: established), ..., inode (field 10)
      if (fields.length > 9 && fields[1]!.endsWith(`:${hexPort}`) && fields[3] === '01') inodes.add(fields[9]!);
    }
  }
  let count = 0;
  let links: string[] = [];
  try {
    links = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return 0;
  }
  for (const fd of links) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (target.startsWith('socket:[') && inodes.has(target.slice(8, -1))) count++;
    } catch {
      // closed meanwhile
    }
  }
  return count;
}

async function openMany(t: ExecutionContext, port: number, sources: readonly string[]): Promise<Array<net.Socket | null>> {
  const out: Array<net.Socket | null> = [];
  for (let i = 0; i < sources.length; i += 50) out.push(...(await Promise.all(sources.slice(i, i + 50).map((localAddress) => attempt(t, port, { localAddress })))));
  return out;
}

const address = (i: number): string => `127.0.${1 + (i >> 8)}.${i & 255 || 1}`;

maybe('spread: 1,000 connections from 250 addresses over 2 workers; neither takes more than 65 %', async (t) => {
  await slot(t);
  const echo = await startCountingEchoServer(t);
  const daemon = await startDaemon(t, { 'conf.d/web.yaml': listener(`127.0.0.1:${echo.port}`, 2) });
  const port = await daemon.port('web/1');
  const pids = await workerPids(daemon, 'web', 2);
  const sources = Array.from({ length: 1000 }, (_, i) => address(i % 250 + 1));
  const open = await openMany(t, port, sources);
  t.is(open.filter((s) => s !== null).length, 1000, 'every connection served');
  const held = await waitFor(() => {
    const now = pids.map((pid) => acceptedOn(pid, port));
    return now[0]! + now[1]! === 1000 ? now : undefined;
  }, 'the workers to hold every connection');
  const share = held.map((n) => n / 1000);
  t.log(`spread over 2 workers: ${held.join(' / ')} connections (${share.map((s) => `${(s * 100).toFixed(1)} %`).join(' / ')})`);
  t.true(Math.max(...share) <= 0.65, `spread ${held.join('/')}`);
  await Promise.all(open.map((s) => (s ? hangUp(s) : undefined)));
});

for (const workers of [2, 3]) {
  maybe(`max_connections_per_ip 3 and max_total_connections 12 are exact across ${workers} workers`, async (t) => {
    await slot(t);
    const echo = await startCountingEchoServer(t);
    const daemon = await startDaemon(t, { 'conf.d/capped.yaml': listener(`127.0.0.1:${echo.port}`, workers, 'max_connections_per_ip: 3\nmax_total_connections: 12\naction: drop') });
    const port = await daemon.port('capped/1');
    await workerPids(daemon, 'capped', workers);
    // Three addresses, five tries each: exactly three each.
    const perIp = [address(11), address(12), address(13)];
    const tries = perIp.flatMap((a) => [a, a, a, a, a]);
    const first = await openMany(t, port, tries);
    for (const a of perIp) t.is(first.filter((s, i) => s !== null && tries[i] === a).length, 3, `${a}: 3 admitted of 5`);
    // Nine open; twenty more addresses, one try each: exactly three more fit under the total.
    const others = Array.from({ length: 20 }, (_, i) => address(40 + i));
    const second = await openMany(t, port, others);
    t.is(second.filter((s) => s !== null).length, 3, 'the listener-wide total: 12 open in all');
    // One closes: one more fits.
    await hangUp(first.find((s) => s !== null)!);
    await waitFor(async () => (await attempt(t, port, { localAddress: address(99) })) !== null || undefined, 'a freed place to be taken');
    t.is((await attempt(t, port, { localAddress: address(98) })), null, 'and then the total is full again');
  });
}

maybe('max_connection_attempts_per_ip 4 is exact across 2 workers: an address\'s attempts, from any port, all count on one worker', async (t) => {
  await slot(t);
  const echo = await startCountingEchoServer(t);
  const daemon = await startDaemon(t, { 'conf.d/tries.yaml': listener(`127.0.0.1:${echo.port}`, 2, 'max_connection_attempts_per_ip: 4\nattempts_window: "1m"\naction: drop') });
  const port = await daemon.port('tries/1');
  await workerPids(daemon, 'tries', 2);
  // Eight addresses (both workers get some), seven attempts each, one after another and each
  // closed before the next: a new source port every time, so only steering by address keeps them
  // on one worker's count.
  const sources = Array.from({ length: 8 }, (_, i) => address(60 + i));
  t.is(new Set(sources.map((a) => workerForAddress(a, 2))).size, 2, 'the addresses are steered to both workers');
  const admitted = await Promise.all(sources.map(async (localAddress) => {
    let served = 0;
    for (let i = 0; i < 7; i++) {
      const socket = await attempt(t, port, { localAddress });
      if (socket === null) continue;
      served++;
      await hangUp(socket);
    }
    return served;
  }));
  t.deepEqual(admitted, sources.map(() => 4), 'four admitted of seven, for every address');
});

maybe('a worker SIGKILLed: the other keeps its connections and serves; the killed one is restarted alone, and counted as its own', async (t) => {
  await slot(t);
  const echo = await startCountingEchoServer(t);
  const daemon = await startDaemon(t, { 'packetpony.yaml': MAIN_FILE_WITH_METRICS, 'conf.d/web.yaml': listener(`127.0.0.1:${echo.port}`, 2) });
  const port = await daemon.port('web/1');
  const [first, second] = await workerPids(daemon, 'web', 2);
  const sources = Array.from({ length: 40 }, (_, i) => address(i + 1));
  const open = await openMany(t, port, sources);
  const base = acceptedOn(second!, port);
  // Reported before the kill (a child reports in batches: what it had not sent yet dies with it).
  const accepted = { listener: 'web', protocol: 'tcp', status: 'accepted' };
  await waitForSample(daemon, 'packetpony_connections_total', accepted, 40);
  process.kill(first!, 'SIGKILL');
  await waitFor(() => !alive(first!), 'the killed worker to be gone');
  const restarted = await waitFor(() => daemon.lines.find((l) => /listener web\/1 up /.test(l) && !l.includes(`pid=${first}`)), 'worker 1 back');
  t.regex(restarted, /pid=\d+/);
  t.is(acceptedOn(second!, port), base, 'the other worker still holds every connection it had');
  // Its connections still echo.
  let echoed = 0;
  for (const socket of open) {
    if (socket === null || socket.destroyed || socket.readableEnded) continue;
    const reply = new Promise<boolean>((resolve) => {
      socket.once('data', () => resolve(true));
      // A half-open client sees the dead worker's FIN as 'end' (its 'close' waits for our end).
      socket.once('end', () => resolve(false));
      socket.once('close', () => resolve(false));
    });
    socket.write('again');
    const late = new Promise<boolean>((resolve) => setTimeout(resolve, 5_000, false).unref());
    if (await Promise.race([reply, late])) echoed++;
  }
  t.log(`${echoed} of 40 connections still echo after worker 1 died`);
  t.true(echoed > 0 && echoed < 40);
  // And every address is served again.
  const after = await openMany(t, port, sources);
  t.is(after.filter((s) => s !== null).length, 40);
  // The child families have a series per worker; the restart is worker 1's alone.
  t.is(await waitForSample(daemon, 'packetpony_child_restarts_total', { listener: 'web', worker: '1' }, 1), 1);
  t.is(await readSample(daemon, 'packetpony_child_restarts_total', { listener: 'web', worker: '2' }), 0);
  for (const worker of ['1', '2']) {
    t.true(await waitForSample(daemon, 'packetpony_child_resident_memory_bytes', { listener: 'web', worker }, 1024 * 1024) > 1024 * 1024, worker);
    t.true(await readSample(daemon, 'packetpony_child_open_fds', { listener: 'web', worker }) > 2, worker);
  }
  // 80 connections were opened, half of them served by each worker: one series has them all.
  t.true(await waitForSample(daemon, 'packetpony_connections_total', accepted, 80) >= 80);
});

async function reloadUnderLoad(t: ExecutionContext, sizes: readonly number[]): Promise<void> {
  await slot(t);
  const echo = await startCountingEchoServer(t);
  const daemon = await startDaemon(t, { 'conf.d/web.yaml': listener(`127.0.0.1:${echo.port}`, sizes[0]!) });
  const port = await daemon.port(sizes[0] === 1 ? 'web' : 'web/1');
  let refused = 0;
  let served = 0;
  let running = true;
  const load = (async () => {
    for (let i = 0; running && i < 20_000; i++) {
      const socket = await attempt(t, port, { localAddress: address(i % 200 + 1) });
      if (socket === null) refused++;
      else {
        served++;
        await hangUp(socket);
      }
    }
  })();
  let previous = sizes[0] === 1 ? [await daemon.childPid('web')] : await workerPids(daemon, 'web', sizes[0]!);
  for (const [step, workers] of sizes.slice(1).entries()) {
    const from = daemon.lines.length;
    const mark = served;
    await waitFor(() => served > mark + 50 || undefined, 'load before the reload');
    // A changed limit as well, so that even a same-size reload replaces every worker.
    writeFileSync(join(daemon.dir, 'conf.d', 'web.yaml'), listener(`127.0.0.1:${echo.port}`, workers, `max_connections_per_ip: ${100 + step}`));
    process.kill(daemon.pid, 'SIGHUP');
    await daemon.waitForLine(/configuration reloaded/, 30_000, from);
    const now = workers === 1 ? [Number(/pid=(\d+)/.exec(await daemon.waitForLine(/listener web up /, 30_000, from))![1])] : await workerPids(daemon, 'web', workers, from);
    t.is(new Set(now).size, workers, `${workers} workers after the reload`);
    t.false(now.some((pid) => previous.includes(pid)), 'every worker replaced');
    await waitFor(() => (previous.every((pid) => !alive(pid)) ? true : undefined), 'the old workers to finish', 30_000);
    previous = now;
  }
  const mark = served;
  await waitFor(() => served > mark + 100 || undefined, 'load after the last reload');
  running = false;
  await load;
  t.log(`workers ${sizes.join(' → ')}: ${served} connections served across the reloads, ${refused} refused`);
  t.is(refused, 0);
  t.false(daemon.lines.some((l) => /new configuration not applied/.test(l)), daemon.lines.filter((l) => /error|warn/i.test(l)).join('\n'));
}

maybe('a reload under load with workers 2 (all replaced, same size): nothing refused', (t) => reloadUnderLoad(t, [2, 2]));
maybe('workers 1 → 3 → 1 by reload, under load: nothing refused, and the group has the new size each time', (t) => reloadUnderLoad(t, [1, 3, 1]));
maybe('workers 3 → 2 by reload: the last socket is drained and closed, nothing refused', (t) => reloadUnderLoad(t, [3, 2]));

maybe('workers 1 → 2 by reload: the connections still open on the old child count on the group\'s total until they close', async (t) => {
  await slot(t);
  const echo = await startCountingEchoServer(t);
  const limits = 'max_total_connections: 10\naction: drop';
  const daemon = await startDaemon(t, { 'conf.d/web.yaml': listener(`127.0.0.1:${echo.port}`, 1, limits) });
  const port = await daemon.port('web');
  const old = await openMany(t, port, Array.from({ length: 8 }, (_, i) => address(70 + i)));
  t.is(old.filter((s) => s !== null).length, 8);
  const from = daemon.lines.length;
  writeFileSync(join(daemon.dir, 'conf.d', 'web.yaml'), listener(`127.0.0.1:${echo.port}`, 2, limits));
  process.kill(daemon.pid, 'SIGHUP');
  await daemon.waitForLine(/configuration reloaded/, 30_000, from);
  await workerPids(daemon, 'web', 2, from);
  // The old child still relays its eight: two more fit under the total of ten, over both workers.
  const fresh = Array.from({ length: 12 }, (_, i) => address(100 + i));
  t.is(new Set(fresh.map((a) => workerForAddress(a, 2))).size, 2);
  const more = await openMany(t, port, fresh);
  t.is(more.filter((s) => s !== null).length, 2, 'eight carried + two new = the total');
  t.true(old.every((s) => s !== null && !s.destroyed), 'the old connections are still open');
  // As the old ones close, their places are free again.
  await Promise.all(old.map((s) => hangUp(s!)));
  const later = Array.from({ length: 12 }, (_, i) => address(120 + i));
  const admitted: Array<net.Socket | null> = [];
  await waitFor(async () => {
    for (const socket of admitted.splice(0)) if (socket) await hangUp(socket);
    admitted.push(...(await openMany(t, port, later)));
    return admitted.filter((s) => s !== null).length === 8 || undefined;
  }, 'eight places free again once the old connections closed');
});

maybe('UDP over 2 workers: sessions per address and the listener total are exact, and replies come from the listener address', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t);
  const daemon = await startDaemon(t, {
    'conf.d/dns.yaml': `protocol: udp\nlisten_address: "127.0.0.1:0"\ntarget_address: "127.0.0.1:${backend.port}"\nallowlist: ["127.0.0.0/8"]\nworkers: 2\nrate_limits:\n  max_connections_per_ip: 3\n  max_total_connections: 10\n  action: drop\n`,
  });
  const port = await daemon.port('dns/1');
  await workerPids(daemon, 'dns', 2);
  const sessions = (): number => new Set(backend.received.map((d) => d.port)).size;
  // Three addresses, five client ports each: three sessions each.
  const crowd = [address(21), address(22), address(23)];
  const clients = await Promise.all(crowd.flatMap((a) => [0, 1, 2, 3, 4].map(() => udpClient(t, port, { localAddress: a }))));
  for (const client of clients) client.send('one');
  await waitFor(() => sessions() === 9 || undefined, 'nine sessions at the target');
  // Five more addresses, one port each: one more session fits under the total of ten.
  const late = await Promise.all([31, 32, 33, 34, 35].map((i) => udpClient(t, port, { localAddress: address(i) })));
  for (const client of late) client.send('one');
  await waitFor(() => sessions() === 10 || undefined, 'the tenth session');
  // The target has seen ten sessions; their replies are still on the way back to the clients.
  const answered = (): UdpClient[] => [...clients, ...late].filter((c) => c.replies.length > 0);
  await waitFor(() => answered().length >= 10 || undefined, 'replies to the ten sessions');
  // A second round from everyone: the admitted ones are answered again, through the same session.
  const admitted = answered();
  t.is(admitted.length, 10, 'ten clients answered, over both workers');
  for (const client of [...clients, ...late]) client.send('two');
  await Promise.all(admitted.map((c) => c.reply(1)));
  t.is(sessions(), 10, 'no new session for anyone, and none for the refused');
  for (const a of crowd) t.true(clients.filter((c, i) => crowd[Math.floor(i / 5)] === a && c.replies.length > 0).length <= 3, `${a}: at most 3`);
  t.is(clients.filter((c) => c.replies.length > 0).length, 9, 'three per crowded address');
});
