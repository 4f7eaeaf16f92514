/**
 * Where a UDP relay's sessions connect to: the relay's own target (UdpTarget) and each session's
 * upstream socket, connected to the target's address (connectUpstream).
 *
 * A target name is resolved at start and refreshed in the background, never per datagram or per
 * session (target-resolver.ts): new sessions pick up a changed address, existing ones keep theirs.
 * UDP gives no sign that an address is dead, so there is no falling back to the next one; the
 * first, in the system's preference order, is used.
 */
import dgram from 'node:dgram';
import { isIP } from 'node:net';
import type { Endpoint } from '../config/types.js';
import type { TargetResolver } from './target-resolver.js';

/** The relay's own target: null host when every session's target comes from the `plan` hook. */
export class UdpTarget {
  readonly host: string | null;
  readonly port: number;
  /** The address new sessions connect to ('' before resolve()). */
  ip = '';
  family: 4 | 6 = 4;
  readonly #resolver: TargetResolver;
  readonly #intervalMs: number;
  #timer: NodeJS.Timeout | null = null;

  constructor(target: Endpoint | null, resolver: TargetResolver, intervalMs: number) {
    // An empty host means "this machine", as when dialing ":port".
    this.host = target === null ? null : target.host === '' ? '127.0.0.1' : target.host;
    this.port = target === null ? 0 : target.port;
    this.#resolver = resolver;
    this.#intervalMs = intervalMs;
  }

  /** Looks the host up (an IP literal is taken as it is); rejects with a ResolveError. */
  async resolve(): Promise<void> {
    const host = this.host;
    if (host === null) return;
    const family = isIP(host);
    if (family !== 0) {
      this.ip = host;
      this.family = family === 6 ? 6 : 4;
      return;
    }
    const addresses = await this.#resolver.resolve(host);
    const first = addresses[0]!;
    this.ip = first.address;
    this.family = first.family;
  }

  /** For a name: looks it up again every interval until stop(); failures go to `onError`. */
  startRefreshing(onError: (err: unknown) => void): void {
    if (this.host === null || isIP(this.host) !== 0) return;
    this.#timer = setInterval(() => {
      this.resolve().catch(onError);
    }, this.#intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }
}

/**
 * A socket connected to `ip`:`port`, ready to send at once; throws what bind or connect threw
 * (EMFILE at bind, say).
 */
export function connectUpstream(ip: string, port: number, family: 4 | 6): dgram.Socket {
  let upstream: dgram.Socket | null = null;
  try {
    upstream = dgram.createSocket({ type: family === 6 ? 'udp6' : 'udp4', lookup: literalLookup });
    // With a lookup that answers at once, bind and connect complete inside this call, so the
    // session can send its first datagram right away instead of queueing it. A failure (EMFILE
    // at bind, say) is emitted as 'error' with no listener yet, which throws here.
    upstream.connect(port, ip);
    upstream.remoteAddress(); // throws if the connect did not complete at once
    return upstream;
  } catch (err) {
    if (upstream !== null) closeQuietly(upstream);
    throw err;
  }
}

/**
 * Upstream sockets are only ever bound and connected to IP literals (the resolver already turned a
 * name into one), so the lookup is the identity and answers synchronously.
 */
function literalLookup(
  hostname: string,
  _options: unknown,
  callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  callback(null, hostname, isIP(hostname));
}

export function closeQuietly(socket: dgram.Socket): void {
  try {
    socket.close();
  } catch {
    // Already closed: nothing left to release.
  }
}
