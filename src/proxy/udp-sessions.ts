/**
 * UDP sessions of one listener: the per-client record and the table that finds it per datagram.
 *
 * The table is keyed by (address, port) without building a key string per datagram. Measured with
 * the address strings a socket hands out (fresh, unhashed, per datagram) and 64–10,000 sessions, a
 * `${address}:${port}` key cost ~200–900 ns per lookup (concatenate, flatten, hash), a Map of
 * address → Map of port ~50–175 ns, and a Map keyed by the port number followed by one string
 * comparison ~10–60 ns. So the port comes first: `#byPort` maps a port to the first session seen
 * with it, and the rare other sessions that share that port (clients behind different addresses
 * that picked the same source port, or NTP-style fixed source ports) live in a per-port Map keyed by
 * address, so even thousands of clients on one port stay O(1).
 */
import type dgram from 'node:dgram';
import type { DatagramSender } from '../platform/index.js';

export class UdpSession<A = unknown> {
  /** The client's address as the listening socket reports it (replies go there). */
  readonly clientAddress: string;
  readonly clientPort: number;
  /** The address for logs and policy: IPv4 for an IPv4-mapped client of a dual-stack socket. */
  readonly clientIp: string;
  /** The address the upstream socket is connected to (a resolved name's address). */
  readonly targetIp: string;
  readonly targetPort: number;
  /** What the admit hook answered; handed back to the meter and to release. */
  readonly admission: A;
  /** Monotonic ms at creation. */
  readonly startedAt: number;
  /** Connected to the target; its listeners are the relay's. */
  readonly upstream: dgram.Socket;

  /** Client → target. */
  bytesSent = 0;
  packetsSent = 0;
  /** Target → client. */
  bytesReceived = 0;
  packetsReceived = 0;

  /** Packets (both ways) the last sweep saw: a change means activity since that sweep. */
  packetsAtSweep = 0;
  /** Monotonic ms of the sweep that last saw activity (or creation). */
  activeAt: number;
  /** Monotonic ms of the last open/update trigger, for periodic_log_interval. */
  loggedAt: number;
  /** Bytes (both ways) still to move before periodic_log_bytes triggers an update. */
  logBytesLeft: number;
  /** The last error the upstream socket reported, for the close event; cleared by a reply. */
  lastError: string | null = null;
  open = true;
  /** What the relay's `plan` hook chose for this session (null: no hook). */
  plan: object | null = null;
  /** Prepended to every datagram sent to the target (a PROXY protocol v2 header); null: nothing. */
  header: Buffer | null = null;
  /** Sends on the upstream socket's handle (src/platform/dgram-internals.ts); null: upstream.send(). */
  sender: DatagramSender | null = null;
  /** The upstream socket's id in the relay's DatagramBatch (udp-batch.ts); -1: Node's path. */
  batchId = -1;
  /** The client's address as the batch reports it (four words of the IPv6 form) and scope id. */
  w0 = 0;
  w1 = 0;
  w2 = 0;
  w3 = 0;
  scope = 0;

  constructor(
    clientAddress: string,
    clientPort: number,
    clientIp: string,
    targetIp: string,
    targetPort: number,
    admission: A,
    upstream: dgram.Socket,
    now: number,
    logBytes: number,
  ) {
    this.clientAddress = clientAddress;
    this.clientPort = clientPort;
    this.clientIp = clientIp;
    this.targetIp = targetIp;
    this.targetPort = targetPort;
    this.admission = admission;
    this.upstream = upstream;
    this.startedAt = now;
    this.activeAt = now;
    this.loggedAt = now;
    this.logBytesLeft = logBytes;
  }

  get bytes(): number {
    return this.bytesSent + this.bytesReceived;
  }

  get packets(): number {
    return this.packetsSent + this.packetsReceived;
  }
}

export class SessionTable<A = unknown> {
  readonly #byPort = new Map<number, UdpSession<A>>();
  /** Sessions whose port is already the key of a different address's session in #byPort. */
  readonly #shared = new Map<number, Map<string, UdpSession<A>>>();
  /** Every session, for the sweep and shutdown; Set iteration tolerates deletion. */
  readonly #all = new Set<UdpSession<A>>();

  get size(): number {
    return this.#all.size;
  }

  get(address: string, port: number): UdpSession<A> | undefined {
    const first = this.#byPort.get(port);
    if (first === undefined || first.clientAddress === address) return first;
    const shared = this.#shared.get(port);
    return shared === undefined ? undefined : shared.get(address);
  }

  /**
   * The batch path's lookup, by the address's words (udp-batch.ts) instead of its string; the
   * string is only made (by `addressOf`) in the rare case that the port's first session is another
   * client's.
   */
  getByWords(port: number, w0: number, w1: number, w2: number, w3: number, addressOf: () => string): UdpSession<A> | undefined {
    const first = this.#byPort.get(port);
    if (first === undefined || (first.w3 === w3 && first.w2 === w2 && first.w1 === w1 && first.w0 === w0)) return first;
    const shared = this.#shared.get(port);
    return shared === undefined ? undefined : shared.get(addressOf());
  }

  /** The caller has checked that no session exists for the session's address and port. */
  add(session: UdpSession<A>): void {
    this.#all.add(session);
    const port = session.clientPort;
    if (!this.#byPort.has(port)) {
      this.#byPort.set(port, session);
      return;
    }
    let shared = this.#shared.get(port);
    if (shared === undefined) {
      shared = new Map();
      this.#shared.set(port, shared);
    }
    shared.set(session.clientAddress, session);
  }

  delete(session: UdpSession<A>): void {
    if (!this.#all.delete(session)) return;
    const port = session.clientPort;
    const shared = this.#shared.get(port);
    if (this.#byPort.get(port) === session) {
      if (shared === undefined) {
        this.#byPort.delete(port);
        return;
      }
      // Promote one of the port's other sessions to first place.
      const next = shared.values().next().value as UdpSession<A>;
      this.#byPort.set(port, next);
      shared.delete(next.clientAddress);
    } else if (shared !== undefined) {
      shared.delete(session.clientAddress);
    }
    if (shared !== undefined && shared.size === 0) this.#shared.delete(port);
  }

  values(): IterableIterator<UdpSession<A>> {
    return this.#all.values();
  }
}
