/**
 * The supervisor binds every listening socket itself and hands it to the listener's child.
 *
 * Why: a bind error (port in use, privileged port) is seen once, here, with the listener's name; a
 * child that crashes or is replaced does not close the socket, so connection attempts wait in the
 * kernel's backlog instead of being refused while the next child starts; and children need no
 * privilege to bind.
 *
 * How: the sockets are created with the same internal helpers node's `cluster` module uses for its
 * shared handles (`net._createServerHandle`, `dgram._createSocketHandle`). They bind without
 * listening, so the supervisor never accepts a connection or reads a datagram itself: the child
 * calls listen() / starts receiving on its copy of the descriptor. Node 20 offers no public way to
 * bind a socket without polling it; test/unit/socket-owner.test.ts fails loudly should a future
 * Node drop these helpers.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { getSystemErrorName } from 'node:util';
import { formatEndpoint } from '../config/address.js';
import type { ListenerConfig } from '../config/types.js';

/** A native TCP or UDP handle: opaque here, passed to the child with `subprocess.send`. */
export type NativeHandle = object & { close(): void; getsockname(out: Record<string, unknown>): number };

interface Internals {
  net: { _createServerHandle(address: string | null, port: number, addressType: number, fd?: number, flags?: number): NativeHandle | number };
  dgram: { _createSocketHandle(address: string, port: number, addressType: 'udp4' | 'udp6', fd?: number, flags?: number): NativeHandle | number };
}

const internals: Internals = { net: net as unknown as Internals['net'], dgram: dgram as unknown as Internals['dgram'] };

// libuv's flag values (uv.h): UV_TCP_IPV6ONLY = 1, UV_UDP_IPV6ONLY = 1.
const IPV6_ONLY = 1;

export interface BoundSocket {
  readonly handle: NativeHandle;
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
}

export type BindResult = { ok: true; socket: BoundSocket } | { ok: false; code: string; message: string };

/** Whether node still has the internals this module relies on. */
export function socketOwnershipSupported(): boolean {
  return typeof internals.net._createServerHandle === 'function' && typeof internals.dgram._createSocketHandle === 'function';
}

function hint(code: string, config: ListenerConfig): string {
  const port = config.listen.port;
  switch (code) {
    case 'EADDRINUSE':
      return `another program holds the address (see: ss -${config.protocol === 'tcp' ? 'lt' : 'lu'}np 'sport = :${port}'); PacketPony retries until it is free`;
    case 'EACCES':
      return `ports below 1024 need root or the CAP_NET_BIND_SERVICE capability (the systemd unit grants it); PacketPony retries`;
    case 'EADDRNOTAVAIL':
      return 'no network interface has this address; check listen_address or the interface configuration; PacketPony retries';
    default:
      return 'PacketPony retries';
  }
}

function failure(errno: number, config: ListenerConfig): BindResult {
  const code = getSystemErrorName(errno);
  const where = formatEndpoint(config.listen.host || '*', config.listen.port);
  return { ok: false, code, message: `cannot listen on ${where}/${config.protocol}: ${code}: ${hint(code, config)}` };
}

function bindTcp(config: ListenerConfig): NativeHandle | number {
  const { host, port } = config.listen;
  if (host === '') return internals.net._createServerHandle(null, port, 4); // tries [::] dual-stack, then 0.0.0.0
  const v6 = net.isIPv6(host);
  return internals.net._createServerHandle(host, port, v6 ? 6 : 4, undefined, v6 && config.ipv6_only ? IPV6_ONLY : 0);
}

/**
 * dgram's helper carries a runtime deprecation (DEP0112, aimed at userland code that wants a socket
 * it will read itself). We want exactly what it does — a bound socket nobody reads here — so its
 * one-time warning is kept off the daemon's stderr.
 */
function createUdpHandle(address: string, port: number, type: 'udp4' | 'udp6', flags: number): NativeHandle | number {
  const quiet = process.noDeprecation;
  process.noDeprecation = true;
  try {
    return internals.dgram._createSocketHandle(address, port, type, undefined, flags);
  } finally {
    process.noDeprecation = quiet;
  }
}

function bindUdp(config: ListenerConfig): NativeHandle | number {
  const { host, port } = config.listen;
  if (host === '') {
    const dual = createUdpHandle('::', port, 'udp6', 0);
    return typeof dual === 'number' ? createUdpHandle('0.0.0.0', port, 'udp4', 0) : dual;
  }
  const v6 = net.isIPv6(host);
  return createUdpHandle(host, port, v6 ? 'udp6' : 'udp4', v6 && config.ipv6_only ? IPV6_ONLY : 0);
}

/** Binds the listener's address. The socket stays open until `close()`, whatever its children do. */
export function bindListener(config: ListenerConfig): BindResult {
  const handle = config.protocol === 'tcp' ? bindTcp(config) : bindUdp(config);
  if (typeof handle === 'number') return failure(handle, config);
  const out: Record<string, unknown> = {};
  // A TCP bind that lost to a listening socket is reported by libuv only later, except here.
  const err = handle.getsockname(out);
  if (err !== 0) {
    handle.close();
    return failure(err, config);
  }
  return {
    ok: true,
    socket: { handle, address: String(out.address), port: Number(out.port), family: out.family === 'IPv6' ? 'IPv6' : 'IPv4' },
  };
}
