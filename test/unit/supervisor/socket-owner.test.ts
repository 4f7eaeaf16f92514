import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import type { ListenerConfig } from '../../../src/config/types.js';
import { bindListener, socketOwnershipSupported } from '../../../src/supervisor/socket-owner.js';

const tcp = (host: string, port: number, ipv6_only = false): ListenerConfig =>
  ({ name: 't', protocol: 'tcp', listen: { host, port }, listen_address: `${host}:${port}`, ipv6_only }) as ListenerConfig;

test('this Node still has the socket helpers the supervisor relies on', (t) => {
  t.true(socketOwnershipSupported());
});

test('binding does not accept: connections are refused until a child listens', async (t) => {
  const result = bindListener(tcp('127.0.0.1', 0));
  if (!result.ok) return t.fail(result.message);
  t.teardown(() => result.socket.handle.close());
  t.is(result.socket.family, 'IPv4');
  const outcome = await new Promise<string>((resolve) => {
    const socket = net.connect(result.socket.port, '127.0.0.1');
    socket.on('connect', () => resolve('connected'));
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
  });
  t.is(outcome, 'ECONNREFUSED');
});

test('a port held by a listening socket is EADDRINUSE, with the listener and a hint', async (t) => {
  const server = net.createServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  t.teardown(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  const result = bindListener(tcp('127.0.0.1', port));
  t.false(result.ok);
  if (result.ok) return;
  t.is(result.code, 'EADDRINUSE');
  t.regex(result.message, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}/tcp: EADDRINUSE: another program holds the address`));
});

test('an address no interface has is EADDRNOTAVAIL', (t) => {
  const result = bindListener(tcp('192.0.2.1', 8080));
  t.false(result.ok);
  if (!result.ok) t.is(result.code, 'EADDRNOTAVAIL');
});

/** Makes a bound handle listen in this process, as a child would. */
async function listenOn(t: ExecutionContext, handle: object): Promise<void> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(handle as net.ListenOptions, resolve));
  t.teardown(() => server.close());
}

test('[::] is dual-stack unless marked IPv6-only, then 0.0.0.0 can share the port', async (t) => {
  const dual = bindListener(tcp('::', 0));
  if (!dual.ok) return t.fail(dual.message);
  await listenOn(t, dual.socket.handle);
  const clash = bindListener(tcp('0.0.0.0', dual.socket.port));
  t.false(clash.ok, 'a dual-stack [::] holds the IPv4 side too');

  const v6only = bindListener(tcp('::', 0, true));
  if (!v6only.ok) return t.fail(v6only.message);
  await listenOn(t, v6only.socket.handle);
  const v4 = bindListener(tcp('0.0.0.0', v6only.socket.port));
  t.true(v4.ok);
  if (v4.ok) v4.socket.handle.close();
});

test('UDP sockets bind the same way', (t) => {
  const result = bindListener({ ...tcp('127.0.0.1', 0), protocol: 'udp' } as ListenerConfig);
  if (!result.ok) return t.fail(result.message);
  t.true(result.socket.port > 0);
  const again = bindListener({ ...tcp('127.0.0.1', result.socket.port), protocol: 'udp' } as ListenerConfig);
  t.false(again.ok);
  result.socket.handle.close();
});
