/**
 * A listener's workers at the socket level (src/native/reuseport.c): sockets of one SO_REUSEPORT
 * group, bound by the addon, listened in order and steered by source address, send every
 * connection and datagram of an address to the socket the JavaScript mirror of the hash names;
 * and the shared connection total admits exactly up to its cap across two mappings, and gives a
 * gone process's connections back.
 */
import test from 'ava';
import dgram from 'node:dgram';
import net from 'node:net';
import { once } from 'node:events';
import { ConnectionTotal, connectionTotalSupported } from '../../../src/native/connection-total.js';
import { bindDescriptor, closeDescriptor, listenDescriptor, probeReuseportSteering, steerBySource, workerForAddress } from '../../../src/platform/index.js';
import { waitFor } from '../../helpers/wait-for.js';

const steering = probeReuseportSteering().usable;
const maybe = steering ? test : test.skip;

/** Binds `count` reuseport descriptors on one port of `host` (the first picks the port). */
function group(t: import('ava').ExecutionContext, udp: boolean, host: string, count: number): number[] {
  const fds: number[] = [];
  let port = 0;
  for (let i = 0; i < count; i++) {
    const bound = bindDescriptor(udp, host, port, host.includes(':'), true);
    if (typeof bound === 'number') throw new Error(`bind failed: errno ${-bound}`);
    port = bound.port;
    fds.push(bound.fd);
  }
  t.teardown(() => fds.forEach((fd) => closeDescriptor(fd)));
  return fds;
}

const SOURCES = Array.from({ length: 40 }, (_, i) => `127.0.${i % 3}.${10 + i * 5}`);

for (const workers of [2, 3]) {
  maybe(`UDP: each source address reaches the socket the hash names (${workers} sockets)`, async (t) => {
    const fds = group(t, true, '127.0.0.1', workers);
    t.is(steerBySource(fds[0]!, workers), 0);
    const seen = new Map<string, Set<number>>();
    const sockets = await Promise.all(fds.map(async (fd, index) => {
      const socket = dgram.createSocket('udp4');
      socket.on('message', (_data, from) => {
        const set = seen.get(from.address) ?? new Set<number>();
        set.add(index);
        seen.set(from.address, set);
      });
      await new Promise<void>((resolve) => socket.bind({ fd }, resolve));
      return socket;
    }));
    t.teardown(() => sockets.forEach((s) => s.close()));
    const port = sockets[0]!.address().port;
    for (const source of SOURCES) {
      const client = dgram.createSocket('udp4');
      await new Promise<void>((resolve) => client.bind(0, source, resolve));
      // Three ports per address: the choice is by address, not by port.
      for (let i = 0; i < 3; i++) client.send(`x${i}`, port, '127.0.0.1');
      await waitFor(() => seen.has(source), `a datagram from ${source}`);
      client.close();
    }
    for (const source of SOURCES) t.deepEqual([...seen.get(source)!], [workerForAddress(source, workers)], source);
    t.is(new Set(SOURCES.map((s) => workerForAddress(s, workers))).size, workers, 'every socket gets some');
  });

  maybe(`TCP: sockets listened in order; each source address connects to the one the hash names (${workers} sockets)`, async (t) => {
    const fds = group(t, false, '127.0.0.1', workers);
    for (const fd of fds) t.is(listenDescriptor(fd), 0);
    t.is(steerBySource(fds[0]!, workers), 0);
    const accepted = new Map<string, number>();
    const servers = await Promise.all(fds.map(async (fd, index) => {
      const server = net.createServer((socket) => {
        accepted.set(`${socket.remoteAddress}:${socket.remotePort}`, index);
        socket.destroy();
      });
      server.listen({ fd });
      await once(server, 'listening');
      return server;
    }));
    t.teardown(() => servers.forEach((s) => s.close()));
    const port = (servers[0]!.address() as net.AddressInfo).port;
    for (const source of SOURCES) {
      const socket = net.connect({ host: '127.0.0.1', port, localAddress: source });
      await once(socket, 'connect');
      const key = `${source}:${socket.localPort}`;
      await waitFor(() => accepted.has(key), `the connection from ${key}`);
      socket.destroy();
      t.is(accepted.get(key), workerForAddress(source, workers), source);
    }
  });
}

maybe('IPv6: ::1 lands where the hash of its four words says, for several group sizes', async (t) => {
  for (const workers of [2, 3, 5]) {
    const fds = group(t, true, '::1', workers);
    t.is(steerBySource(fds[0]!, workers), 0);
    let got = -1;
    const sockets = await Promise.all(fds.map(async (fd, index) => {
      const socket = dgram.createSocket('udp6');
      socket.on('message', () => (got = index));
      await new Promise<void>((resolve) => socket.bind({ fd }, resolve));
      return socket;
    }));
    const client = dgram.createSocket('udp6');
    client.send('x', sockets[0]!.address().port, '::1');
    await waitFor(() => got >= 0, 'the datagram');
    t.is(got, workerForAddress('::1', workers), `${workers} sockets`);
    client.close();
    sockets.forEach((s) => s.close());
  }
});

test('the hash mirror: IPv4-mapped addresses hash as IPv4, IPv6 forms alike', (t) => {
  t.is(workerForAddress('::ffff:10.1.2.3', 7), workerForAddress('10.1.2.3', 7));
  t.is(workerForAddress('2001:db8::1', 7), workerForAddress('2001:0db8:0:0:0:0:0:1', 7));
  const counts = [0, 0];
  for (let i = 0; i < 1000; i++) counts[workerForAddress(`10.${i >> 8}.${i & 255}.1`, 2)]!++;
  t.true(counts[0]! > 350 && counts[1]! > 350, `spread ${counts.join('/')}`);
});

(connectionTotalSupported() ? test : test.skip)('the shared total: exact at the cap across two mappings; a reclaim gives a slot back', (t) => {
  const supervisor = ConnectionTotal.create();
  const workerA = ConnectionTotal.open(supervisor.fd);
  const workerB = ConnectionTotal.open(supervisor.fd);
  let admitted = 0;
  for (let i = 0; i < 10; i++) {
    if (workerA.acquire(1, 5)) admitted++;
    if (workerB.acquire(2, 5)) admitted++;
  }
  t.is(admitted, 5);
  t.is(supervisor.total, 5);
  workerA.release(1);
  t.is(supervisor.total, 4);
  t.true(workerB.acquire(2, 5));
  // Slot 2 (worker B) held 3 of the 5, slot 1 two; B dies.
  t.is(supervisor.reclaim(2), 3);
  t.is(supervisor.total, 2);
  // A release after the reclaim (it cannot happen for a dead process, but must not underflow).
  workerB.release(2);
  t.is(supervisor.total, 2);
  t.true(workerA.acquire(1, 0), 'no cap');
  t.is(supervisor.total, 3);
  closeDescriptor(supervisor.fd);
});
