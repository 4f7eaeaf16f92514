/**
 * Target name resolution with a small cache, so that a listener forwarding to
 * `backend.example.com:80` does not run a getaddrinfo() per connection (Node runs it on the libuv
 * thread pool, four threads by default: a burst of connections would queue behind each other).
 *
 * - IP literals (IPv4, IPv6) are answered without any lookup.
 * - A successful answer is kept `ttlMs` (default 30 s). getaddrinfo() gives no TTL, so this is a
 *   fixed horizon: a backend's address change is picked up within it.
 * - Past its TTL an entry is still served for one more `ttlMs` while a single background lookup
 *   refreshes it, so a connection never waits for a refresh. A failed refresh keeps the old
 *   addresses only when the failure is transient (EAI_AGAIN: the resolver is unreachable); a name
 *   that no longer exists is dropped.
 * - A failed lookup is cached `negativeTtlMs` (default 5 s): a flood of connections to a broken
 *   name costs one lookup per 5 s, and a fixed DNS record is seen soon after.
 * - Concurrent lookups of one name share one getaddrinfo() call.
 *
 * Addresses keep the system's order (RFC 6724 sorting by getaddrinfo, /etc/hosts and
 * /etc/gai.conf honoured); the relay dials them in that order.
 */
import { lookup as dnsLookup } from 'node:dns';
import { isIP } from 'node:net';

export interface ResolvedAddress {
  readonly address: string;
  readonly family: 4 | 6;
}

/** getaddrinfo with every address; injectable for tests. */
export type LookupAll = (
  host: string,
  callback: (err: NodeJS.ErrnoException | null, addresses: readonly ResolvedAddress[]) => void,
) => void;

export interface TargetResolverOptions {
  /** How long a successful answer is used as is, in ms. */
  readonly ttlMs?: number;
  /** How long a failed answer is remembered, in ms. */
  readonly negativeTtlMs?: number;
  /** Most names remembered; the oldest entry goes first. */
  readonly maxEntries?: number;
  readonly lookup?: LookupAll;
  /** Milliseconds, monotonic. */
  readonly now?: () => number;
}

/** A name that could not be resolved. `code` is the getaddrinfo code (ENOTFOUND, EAI_AGAIN, …). */
export class ResolveError extends Error {
  readonly code: string;
  readonly host: string;

  constructor(host: string, code: string) {
    super(`cannot resolve ${host}: ${describeResolveCode(code)} (${code})`);
    this.name = 'ResolveError';
    this.code = code;
    this.host = host;
  }
}

function describeResolveCode(code: string): string {
  switch (code) {
    case 'ENOTFOUND':
    case 'EAI_NONAME':
      return 'no such name';
    case 'ENODATA':
    case 'EAI_NODATA':
      return 'the name has no address';
    case 'EAI_AGAIN':
    case 'ETIMEOUT':
      return 'the name server did not answer';
    default:
      return 'lookup failed';
  }
}

/** Failures where the last known addresses are better than none. */
function isTransient(code: string): boolean {
  return code === 'EAI_AGAIN' || code === 'ETIMEOUT' || code === 'ECONNREFUSED';
}

const systemLookup: LookupAll = (host, callback) => {
  dnsLookup(host, { all: true }, (err, addresses) => {
    if (err !== null) {
      callback(err, []);
      return;
    }
    callback(null, addresses.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 })));
  });
};

interface Entry {
  addresses: readonly ResolvedAddress[] | null;
  error: ResolveError | null;
  /** Fresh until this time. */
  expires: number;
  /** A positive entry may be served (while refreshing) until this time. */
  staleUntil: number;
  inflight: Promise<readonly ResolvedAddress[]> | null;
}

export class TargetResolver {
  readonly #ttl: number;
  readonly #negativeTtl: number;
  readonly #maxEntries: number;
  readonly #lookup: LookupAll;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();

  constructor(options: TargetResolverOptions = {}) {
    this.#ttl = options.ttlMs ?? 30_000;
    this.#negativeTtl = options.negativeTtlMs ?? 5_000;
    this.#maxEntries = options.maxEntries ?? 256;
    this.#lookup = options.lookup ?? systemLookup;
    this.#now = options.now ?? (() => performance.now());
  }

  /**
   * The addresses of `host` if they are known without waiting: an IP literal, or a cached answer
   * (a stale one starts a background refresh). undefined means: call resolve().
   */
  peek(host: string): readonly ResolvedAddress[] | undefined {
    const family = isIP(host);
    if (family !== 0) return [{ address: host, family: family === 6 ? 6 : 4 }];
    const entry = this.#entries.get(host);
    if (entry === undefined || entry.addresses === null) return undefined;
    const now = this.#now();
    if (now < entry.expires) return entry.addresses;
    if (now < entry.staleUntil) {
      if (entry.inflight === null) this.#start(host, entry).catch(noop);
      return entry.addresses;
    }
    return undefined;
  }

  /** The addresses of `host`, looked up if need be. Rejects with a ResolveError. */
  resolve(host: string): Promise<readonly ResolvedAddress[]> {
    const known = this.peek(host);
    if (known !== undefined) return Promise.resolve(known);
    let entry = this.#entries.get(host);
    if (entry !== undefined && entry.error !== null && this.#now() < entry.expires) {
      return Promise.reject(entry.error);
    }
    if (entry === undefined) {
      entry = { addresses: null, error: null, expires: 0, staleUntil: 0, inflight: null };
      this.#remember(host, entry);
    }
    return entry.inflight ?? this.#start(host, entry);
  }

  /** Forgets every cached answer. */
  clear(): void {
    this.#entries.clear();
  }

  #start(host: string, entry: Entry): Promise<readonly ResolvedAddress[]> {
    const inflight = new Promise<readonly ResolvedAddress[]>((resolve, reject) => {
      this.#lookup(host, (err, addresses) => {
        entry.inflight = null;
        const now = this.#now();
        if (err === null && addresses.length > 0) {
          entry.addresses = addresses;
          entry.error = null;
          entry.expires = now + this.#ttl;
          entry.staleUntil = entry.expires + this.#ttl;
          resolve(addresses);
          return;
        }
        const error = new ResolveError(host, err?.code ?? 'ENODATA');
        if (entry.addresses !== null && isTransient(error.code)) {
          // Keep serving the last good answer; try again after the negative TTL.
          entry.expires = now + this.#negativeTtl;
          entry.staleUntil = entry.expires + this.#ttl;
          resolve(entry.addresses);
          return;
        }
        entry.addresses = null;
        entry.error = error;
        entry.expires = now + this.#negativeTtl;
        reject(error);
      });
    });
    entry.inflight = inflight;
    return inflight;
  }

  #remember(host: string, entry: Entry): void {
    if (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done !== true) this.#entries.delete(oldest.value);
    }
    this.#entries.set(host, entry);
  }
}

function noop(): void {}

/** The process-wide resolver: a child serves one listener, so one cache is enough. */
export const defaultResolver = new TargetResolver();
