/**
 * Listening sockets bound by our addon (src/native/socket_bind.c): a plain descriptor, bound and
 * not listening, that the supervisor keeps and each child inherits at spawn. The supervisor's path
 * where Node's helpers for this are gone (dgram on Node 26) or ruled out (PACKETPONY_PUBLIC_PATH=1);
 * see src/supervisor/socket-owner.ts.
 */
import net from 'node:net';
import { nativeAddon, nativeAddonMissing } from '../native/addon.js';
import { unusable, usable, type Probe } from './probe.js';

interface SocketBindCalls {
  bindSocket(udp: number, address: string, port: number, v6only: number, reuseport?: number): number;
  boundPort(fd: number): number;
  closeSocket(fd: number): number;
}

const NAME = 'addon bindSocket (socket_bind.c)';

function calls(): SocketBindCalls | null {
  const addon = nativeAddon() as unknown as Partial<SocketBindCalls> | null;
  if (addon === null || typeof addon.bindSocket !== 'function' || typeof addon.boundPort !== 'function' || typeof addon.closeSocket !== 'function') {
    return null;
  }
  return addon as SocketBindCalls;
}

export function probeAddonSockets(): Probe {
  if (calls() !== null) return usable(NAME);
  const why = nativeAddonMissing();
  return unusable(NAME, why !== '' ? why : 'the built addon predates it (run npm run build)');
}

export interface BoundDescriptor {
  readonly fd: number;
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
}

/**
 * Binds a TCP or UDP socket to host:port (host '': dual-stack [::], else 0.0.0.0). Returns it, or a
 * negative errno. Only after a usable probe. `reuseport`: one of a listener's workers' sockets
 * (reuseport.ts).
 */
export function bindDescriptor(udp: boolean, host: string, port: number, v6only: boolean, reuseport = false): BoundDescriptor | number {
  const addon = calls()!;
  const tries = host === '' ? [{ address: '::', v6only: false }, { address: '0.0.0.0', v6only: false }] : [{ address: host, v6only }];
  let result = 0;
  for (const { address, v6only: only } of tries) {
    result = addon.bindSocket(udp ? 1 : 0, address, port, only ? 1 : 0, reuseport ? 1 : 0);
    if (result < 0) continue;
    const bound = addon.boundPort(result);
    if (bound < 0) {
      addon.closeSocket(result);
      return bound;
    }
    return { fd: result, address, port: bound, family: net.isIPv6(address) ? 'IPv6' : 'IPv4' };
  }
  return result;
}

export function closeDescriptor(fd: number): void {
  calls()?.closeSocket(fd);
}
