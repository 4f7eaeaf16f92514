/**
 * The helpers node's own `cluster` module binds its shared sockets with: `net._createServerHandle`
 * and `dgram._createSocketHandle`. They make a native handle bound to an address but not listening
 * or reading, which a process can keep while another serves it: exactly what the supervisor needs
 * (src/supervisor/socket-owner.ts). Both are underscore exports: `dgram._createSocketHandle` is
 * gone on Node 26 (moved inside node for cluster's use), `net._createServerHandle` is still there.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { FORCED_REASON, missing, publicPathForced, unusable, usable, type Probe } from './probe.js';

/** A native TCP or UDP handle: opaque, closed by its owner, passed to a child with `subprocess.send`. */
export type NativeHandle = object & { close(): void; getsockname(out: Record<string, unknown>): number };

type CreateServerHandle = (address: string | null, port: number, addressType: number, fd?: number, flags?: number) => NativeHandle | number;
type CreateSocketHandle = (address: string, port: number, addressType: 'udp4' | 'udp6', fd?: number, flags?: number) => NativeHandle | number;

// libuv's flag values (uv.h): UV_TCP_IPV6ONLY = 1, UV_UDP_IPV6ONLY = 1.
const IPV6_ONLY = 1;

function look<T>(module: object, key: string): T | null {
  const value = (module as Record<string, unknown>)[key];
  return typeof value === 'function' ? (value as T) : null;
}

const createServerHandle = look<CreateServerHandle>(net, '_createServerHandle');
const createSocketHandle = look<CreateSocketHandle>(dgram, '_createSocketHandle');

function probeFor(name: string, found: unknown): Probe {
  if (publicPathForced()) return unusable(name, FORCED_REASON);
  return found !== null ? usable(name) : unusable(name, missing());
}

export function probeServerHandleHelper(): Probe {
  return probeFor('net._createServerHandle', createServerHandle);
}

export function probeSocketHandleHelper(): Probe {
  return probeFor('dgram._createSocketHandle', createSocketHandle);
}

/**
 * A TCP socket bound to host:port, not listening, or a negative errno. `host` '': every address,
 * dual-stack [::] where the system has IPv6, else 0.0.0.0 (as net does). Only after a usable probe.
 */
export function bindTcpHandle(host: string, port: number, v6only: boolean): NativeHandle | number {
  const create = createServerHandle;
  if (create === null) throw new Error(`net._createServerHandle is ${missing()}`);
  if (host === '') return create(null, port, 4);
  const v6 = net.isIPv6(host);
  return create(host, port, v6 ? 6 : 4, undefined, v6 && v6only ? IPV6_ONLY : 0);
}

/**
 * A UDP socket bound to host:port, not reading, or a negative errno; `host` '' as for TCP. dgram's
 * helper carries a runtime deprecation (DEP0112, aimed at userland code that wants a socket it will
 * read itself). We want exactly what it does, so its one-time warning is kept off the daemon's stderr.
 */
export function bindUdpHandle(host: string, port: number, v6only: boolean): NativeHandle | number {
  const create = createSocketHandle;
  if (create === null) throw new Error(`dgram._createSocketHandle is ${missing()}`);
  const quiet = process.noDeprecation;
  process.noDeprecation = true;
  try {
    if (host === '') {
      const dual = create('::', port, 'udp6', undefined, 0);
      return typeof dual === 'number' ? create('0.0.0.0', port, 'udp4', undefined, 0) : dual;
    }
    const v6 = net.isIPv6(host);
    return create(host, port, v6 ? 'udp6' : 'udp4', undefined, v6 && v6only ? IPV6_ONLY : 0);
  } finally {
    process.noDeprecation = quiet;
  }
}
