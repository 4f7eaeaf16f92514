/**
 * A listener's workers share its address through one SO_REUSEPORT group, one socket per worker,
 * that the supervisor binds (addon-sockets.ts), makes listen in worker order and steers by the
 * client's source address (src/native/reuseport.c says why and how). This module holds the calls
 * and the steering hash's mirror, which tests use to know where an address lands.
 */
import net from 'node:net';
import { nativeAddon, nativeAddonMissing } from '../native/addon.js';
import { unusable, usable, type Probe } from './probe.js';

interface ReuseportCalls {
  listenSocket(fd: number, backlog: number): number;
  steerBySource(fd: number, workers: number): number;
  allowReuseport(fd: number): number;
  pendingInput(fd: number): number;
}

const NAME = 'addon steerBySource (reuseport.c)';

function calls(): ReuseportCalls | null {
  const addon = nativeAddon() as unknown as Partial<ReuseportCalls> | null;
  return addon !== null && typeof addon.listenSocket === 'function' && typeof addon.steerBySource === 'function' ? (addon as ReuseportCalls) : null;
}

/** Whether a listener can run several workers here. PACKETPONY_PUBLIC_PATH does not rule it out: it is no Node internal. */
export function probeReuseportSteering(): Probe {
  if (calls() !== null) return usable(NAME);
  const why = nativeAddonMissing();
  return unusable(NAME, why !== '' ? why : 'the built addon predates it (run npm run build)');
}

/** Node's default backlog, which the child's listen({ fd }) sets again. */
export const LISTEN_BACKLOG = 511;

/** listen() on a bound TCP descriptor: 0 or a negative errno. */
export function listenDescriptor(fd: number, backlog = LISTEN_BACKLOG): number {
  return calls()!.listenSocket(fd, backlog);
}

/** Steers the group that `fd` belongs to over `workers` sockets by source address: 0 or a negative errno. */
export function steerBySource(fd: number, workers: number): number {
  return calls()!.steerBySource(fd, workers);
}

/** Sets SO_REUSEPORT on a socket bound without it, so that others can join it: 0 or a negative errno. */
export function allowReuseport(fd: number): number {
  return calls()!.allowReuseport(fd);
}

/** A TCP listener's accept queue, or the bytes of a UDP socket's next datagram; or a negative errno. */
export function pendingInput(fd: number): number {
  return calls()!.pendingInput(fd);
}

/** The 32 bits the program hashes: an IPv4 address, or the XOR of an IPv6 address's four words. */
function sourceWord(address: string): number {
  const mapped = address.startsWith('::ffff:') && net.isIPv4(address.slice(7)) ? address.slice(7) : address;
  if (net.isIPv4(mapped)) {
    const [a, b, c, d] = mapped.split('.').map(Number) as [number, number, number, number];
    return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
  }
  const groups = expandIPv6(mapped);
  let word = 0;
  for (let i = 0; i < 8; i += 2) word ^= ((groups[i]! << 16) | groups[i + 1]!) >>> 0;
  return word >>> 0;
}

function expandIPv6(address: string): number[] {
  const bare = address.split('%')[0]!;
  const [head, tail] = bare.includes('::') ? bare.split('::') as [string, string] : [bare, undefined];
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').flatMap((g) => (g.includes('.') ? ipv4Groups(g) : [parseInt(g, 16)])));
  const front = parse(head);
  const back = tail === undefined ? [] : parse(tail);
  return [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
}

function ipv4Groups(dotted: string): number[] {
  const [a, b, c, d] = dotted.split('.').map(Number) as [number, number, number, number];
  return [(a << 8) | b, (c << 8) | d];
}

/** Which worker (0-based) the steering program sends `address` to, of `workers`. */
export function workerForAddress(address: string, workers: number): number {
  return (Math.imul(sourceWord(address), 2654435761) >>> 16) % workers;
}
