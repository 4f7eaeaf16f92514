/**
 * The supervisor's sockets, on both of its paths (Node's helper and a descriptor bound by our
 * addon): bound without accepting, bind errors named, dual stack as asked, and a socket that keeps
 * its backlog while no child serves it.
 */
import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import type { ListenerConfig } from '../../../src/config/types.js';
import { bindListenerOn, ownershipPath, socketOwnershipSupported, type BoundSocket, type OwnershipPath } from '../../../src/supervisor/socket-owner.js';
import { probeAddonSockets, probeServerHandleHelper, probeSocketHandleHelper } from '../../../src/platform/index.js';

const tcp = (host: string, port: number, ipv6_only = false): ListenerConfig =>
  ({ name: 't', protocol: 'tcp', listen: { host, port }, listen_address: `${host}:${port}`, ipv6_only }) as ListenerConfig;
const udp = (host: string, port: number): ListenerConfig => ({ ...tcp(host, port), protocol: 'udp' }) as ListenerConfig;

test('this process can own TCP and UDP sockets, on the helper where Node has it', (t) => {
  t.true(socketOwnershipSupported(), JSON.stringify([ownershipPath('tcp'), ownershipPath('udp')]));
  if (probeServerHandleHelper().usable) t.is(ownershipPath('tcp').path, 'node-helper');
  else t.is(ownershipPath('tcp').path, 'addon-descriptor');
});

test('the addon binds sockets (the path where Node has no helper)', (t) => {
  t.true(probeAddonSockets().usable, probeAddonSockets().reason);
});

test('with neither path, the bind fails and says what is missing', (t) => {
  const result = bindListenerOn(null, udp('127.0.0.1', 0), [{ name: 'dgram._createSocketHandle', usable: false, reason: 'missing on Node.js v26' }]);
  t.false(result.ok);
  if (!result.ok) {
    t.is(result.code, 'PP_ERR_SOCKET_OWNERSHIP');
    t.regex(result.message, /cannot own a UDP socket for 127\.0\.0\.1:0\/udp .*dgram\._createSocketHandle: missing on Node\.js v26.*build the native addon/);
  }
});

const PATHS: OwnershipPath[] = ['node-helper', 'addon-descriptor'];

/** Node 26 has no dgram._createSocketHandle: the helper's UDP cases are skipped there (listed as such). */
const udpTest = (path: OwnershipPath): typeof test | typeof test.skip =>
  path === 'node-helper' && !probeSocketHandleHelper().usable ? test.skip : test;

function bound(t: ExecutionContext, path: OwnershipPath, config: ListenerConfig): BoundSocket {
  const result = bindListenerOn(path, config);
  if (!result.ok) throw new Error(result.message);
  t.teardown(() => result.socket.close());
  return result.socket;
}

/**
 * Serves a bound socket in this process as a child would (with the handle, or listen({ fd }) on
 * the descriptor); resolves once listening. The server is closed at teardown.
 */
async function listenOn(t: ExecutionContext, socket: BoundSocket, child = true): Promise<net.Server> {
  const server = net.createServer((c) => c.end('served'));
  // A child has its own copy of the descriptor; here the server would close the supervisor's own,
  // so the fd path listens on it only where the test closes nothing else.
  const target = socket.transfer.kind === 'handle' ? socket.transfer.handle : { fd: socket.transfer.fd };
  await new Promise<void>((resolve) => server.listen(target as net.ListenOptions, resolve));
  if (child) t.teardown(() => server.close());
  return server;
}

function attempt(port: number, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, host);
    let data = '';
    socket.on('data', (chunk) => (data += chunk.toString()));
    socket.on('end', () => resolve(data));
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
  });
}

for (const path of PATHS) {
  test(`${path}: binding does not accept: connections are refused until a child listens`, async (t) => {
    const socket = bound(t, path, tcp('127.0.0.1', 0));
    t.is(socket.family, 'IPv4');
    t.is(socket.address, '127.0.0.1');
    t.true(socket.port > 0);
    t.is(await attempt(socket.port), 'ECONNREFUSED');
    if (path === 'node-helper') {
      await listenOn(t, socket);
      t.is(await attempt(socket.port), 'served');
    }
  });

  test(`${path}: a port held by a listening socket is EADDRINUSE, with the listener and a hint`, async (t) => {
    const server = net.createServer().listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    t.teardown(() => server.close());
    const port = (server.address() as net.AddressInfo).port;
    const result = bindListenerOn(path, tcp('127.0.0.1', port));
    t.false(result.ok);
    if (result.ok) return;
    t.is(result.code, 'EADDRINUSE');
    t.regex(result.message, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}/tcp: EADDRINUSE: another program holds the address`));
  });

  test(`${path}: an address no interface has is EADDRNOTAVAIL`, (t) => {
    const result = bindListenerOn(path, tcp('192.0.2.1', 8080));
    t.false(result.ok);
    if (!result.ok) t.is(result.code, 'EADDRNOTAVAIL');
  });

  udpTest(path)(`${path}: UDP sockets bind the same way, and a bound port is held`, (t) => {
    const socket = bound(t, path, udp('127.0.0.1', 0));
    t.true(socket.port > 0);
    const again = bindListenerOn(path, udp('127.0.0.1', socket.port));
    t.false(again.ok);
    if (!again.ok) t.is(again.code, 'EADDRINUSE');
  });

  udpTest(path)(`${path}: an IPv6 UDP socket says so (a child opens it as udp6)`, (t) => {
    const socket = bound(t, path, udp('::1', 0));
    t.is(socket.family, 'IPv6');
  });

  udpTest(path)(`${path}: closing twice closes once`, (t) => {
    const result = bindListenerOn(path, udp('127.0.0.1', 0));
    if (!result.ok) return t.fail(result.message);
    result.socket.close();
    result.socket.close();
    const again = bindListenerOn(path, udp('127.0.0.1', result.socket.port));
    t.true(again.ok, 'the port is free again');
    if (again.ok) again.socket.close();
  });
}

test('node-helper: [::] is dual-stack unless marked IPv6-only, then 0.0.0.0 can share the port', async (t) => {
  const dual = bound(t, 'node-helper', tcp('::', 0));
  await listenOn(t, dual);
  const clash = bindListenerOn('node-helper', tcp('0.0.0.0', dual.port));
  t.false(clash.ok, 'a dual-stack [::] holds the IPv4 side too');

  const v6only = bound(t, 'node-helper', tcp('::', 0, true));
  await listenOn(t, v6only);
  const v4 = bindListenerOn('node-helper', tcp('0.0.0.0', v6only.port));
  t.true(v4.ok);
  if (v4.ok) v4.socket.close();
});

/** Binds on the addon's path and listens on the descriptor here (the server owns it from then on). */
async function listeningDescriptor(t: ExecutionContext, config: ListenerConfig): Promise<BoundSocket> {
  const result = bindListenerOn('addon-descriptor', config);
  if (!result.ok) throw new Error(result.message);
  const server = await listenOn(t, result.socket, false);
  t.teardown(() => server.close());
  return result.socket;
}

test('addon-descriptor: [::] is dual-stack unless marked IPv6-only, and "" takes every address', async (t) => {
  // Two sockets with SO_REUSEADDR may bind one port while neither listens (as on the helper's
  // path): the clash shows once the first one listens, as it does once a child serves it.
  const dual = await listeningDescriptor(t, tcp('::', 0));
  t.false(bindListenerOn('addon-descriptor', tcp('0.0.0.0', dual.port)).ok, 'a dual-stack [::] holds the IPv4 side too');
  const v6only = await listeningDescriptor(t, tcp('::', 0, true));
  const v4 = bindListenerOn('addon-descriptor', tcp('0.0.0.0', v6only.port));
  t.true(v4.ok);
  if (v4.ok) v4.socket.close();
  const any = await listeningDescriptor(t, tcp('', 0));
  t.is(any.address, '::');
  t.false(bindListenerOn('addon-descriptor', tcp('127.0.0.1', any.port)).ok, 'every address, IPv4 too');
  t.is(await attempt(any.port), 'served', 'IPv4 clients reach [::]');
});

test('addon-descriptor: served with listen({ fd }), the socket keeps its backlog after that server closes', async (t) => {
  const result = bindListenerOn('addon-descriptor', tcp('127.0.0.1', 0));
  if (!result.ok) return t.fail(result.message);
  const socket = result.socket;
  // This server takes over the descriptor itself (no child here to hold a copy): it closes it.
  const server = await listenOn(t, socket, false);
  t.is(await attempt(socket.port), 'served');
  await new Promise<void>((resolve) => server.close(() => resolve()));
  t.is(await attempt(socket.port), 'ECONNREFUSED', 'closed by the only holder');
});
