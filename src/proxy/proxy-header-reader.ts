/**
 * accept_proxy_protocol on a TCP listener: reads the PROXY protocol header (v1 or v2) that a
 * trusted front sends first, before the policy sees the connection, so that the address it
 * announces is the one the denylist, allowlist, limits, logs and metrics use.
 *
 * - A connection from an address outside `trusted` is reset at once, without reading anything: the
 *   spec forbids guessing whether a header is present, so a listener that accepts the protocol
 *   takes it from trusted fronts only.
 * - A malformed header (decided as early as the bytes allow), a connection that ends before its
 *   header is complete, or no complete header within `header_timeout`: reset.
 * Each refusal is counted (errors_total: proxy_untrusted, proxy_header) and logged through an
 * aggregator — the first of a kind at once, the rest as one count every 10 s — so a scanner
 * cannot flood the logs.
 *
 * A LOCAL (v2) or UNKNOWN (v1) header, or one for an address family we do not forward (UNIX), is
 * valid: the connection is then treated as coming from the front itself, as the spec says.
 *
 * The connection comes as a TcpEnd not reading yet; the header is read into a small buffer of its
 * own, and whatever the front sent after it is handed on with the connection (`early`), so the
 * relay forwards it first, exactly as if the header had never been there. The hand-over happens
 * inside the read that completed the header: the relay's buffer takes over from the next read.
 */
import { formatEndpoint } from '../config/address.js';
import type { AcceptProxyProtocolSettings } from '../config/types.js';
import { Allowlist } from '../policy/index.js';
import type { LogEvent } from '../telemetry/events.js';
import { MessageAggregator } from '../telemetry/message-aggregator.js';
import type { ListenerStats } from '../telemetry/stats.js';
import { parseProxyHeader, type HostPort } from './proxy-protocol.js';
import { giveSmall, takeSmall } from './read-buffers.js';
import type { ReadSink, TcpEnd } from '../platform/tcp-end.js';

const AGGREGATE_INTERVAL_MS = 10_000;

/**
 * The client as announced by the front; `destination` is null when it announced none; `early`:
 * what followed the header, if anything.
 */
export type OnHeader = (end: TcpEnd, client: HostPort, destination: HostPort | null, early: Buffer[] | undefined) => void;

interface Pending {
  readonly end: TcpEnd;
  finish(): void;
}

function noop(): void {}

export class ProxyHeaderReader {
  readonly #name: string;
  readonly #timeoutMs: number;
  readonly #trusted: Allowlist;
  readonly #stats: ListenerStats;
  readonly #problems: MessageAggregator;
  readonly #pending = new Set<Pending>();
  readonly #timer: NodeJS.Timeout;
  /** Called whenever a pending connection is settled (handed on or closed). */
  onSettled: (() => void) | undefined;

  constructor(name: string, settings: AcceptProxyProtocolSettings, stats: ListenerStats, emit: (event: LogEvent) => void) {
    this.#name = name;
    this.#timeoutMs = settings.header_timeout;
    this.#trusted = new Allowlist(settings.trusted);
    this.#stats = stats;
    this.#problems = new MessageAggregator(emit);
    this.#timer = setInterval(() => this.#problems.flush(), AGGREGATE_INTERVAL_MS);
    this.#timer.unref();
  }

  /** Connections whose header is still awaited. */
  get pending(): number {
    return this.#pending.size;
  }

  /**
   * Reads the header of a freshly accepted connection from `remote` (normalised) and hands it on
   * with the announced client, or resets it. `onHeader` may run synchronously.
   */
  read(end: TcpEnd, remote: string, port: number, onHeader: OnHeader): void {
    if (!this.#trusted.allows(remote)) {
      this.#stats.error('proxy_untrusted');
      this.#problems.report('untrusted', 'warning', `listener ${this.#name}: refused a connection from ${formatEndpoint(remote, port)}: not a trusted PROXY protocol source (accept_proxy_protocol.trusted)`, {
        listener: this.#name,
        client: formatEndpoint(remote, port),
      });
      end.reset();
      return;
    }
    let buffered: Buffer | null = null;
    let readBuffer: Buffer | null = takeSmall();
    const pending: Pending = {
      end,
      finish: () => {
        end.onEnd = end.onError = end.onClose = noop;
        clearTimeout(timer);
        this.#pending.delete(pending);
        // Inside a read the native side has already been given the next buffer to use, or the
        // connection is being reset: either way this one is free again.
        if (readBuffer !== null) giveSmall(readBuffer);
        readBuffer = null;
      },
    };
    const fail = (kind: string, reason: string): void => {
      pending.finish();
      this.#stats.error('proxy_header');
      this.#problems.report(`header:${kind}`, 'warning', `listener ${this.#name}: closed a connection from ${formatEndpoint(remote, port)}: ${reason}`, {
        listener: this.#name,
        client: formatEndpoint(remote, port),
      });
      end.reset();
      this.onSettled?.();
    };
    let registered = false;
    const sink: ReadSink = {
      // The one buffer, registered once; null from then on keeps it.
      nextBuffer: () => {
        if (registered) return null;
        registered = true;
        return readBuffer;
      },
      onStaticRead: (nread) => {
        const chunk = Buffer.from(readBuffer!.subarray(0, nread));
        buffered = buffered === null ? chunk : Buffer.concat([buffered, chunk]);
        const result = parseProxyHeader(buffered);
        if (result.kind === 'partial') return true;
        if (result.kind === 'invalid') {
          fail('malformed', `malformed PROXY protocol header: ${result.reason}`);
          return false;
        }
        pending.finish();
        const rest = buffered.subarray(result.length);
        const { source, destination } = result.header;
        onHeader(end, source ?? { ip: remote, port }, source === null ? null : destination, rest.length > 0 ? [rest] : undefined);
        this.onSettled?.();
        // The relay starts reading once its target is connected.
        return false;
      },
    };
    const timer = setTimeout(() => fail('timeout', `no complete PROXY protocol header within ${this.#timeoutMs} ms`), this.#timeoutMs);
    timer.unref();
    this.#pending.add(pending);
    end.onEnd = () => fail('incomplete', 'the connection ended before a complete PROXY protocol header');
    end.onError = () => fail('incomplete', 'the connection failed before a complete PROXY protocol header');
    end.onClose = () => fail('incomplete', 'the connection closed before a complete PROXY protocol header');
    end.setSink(sink);
    if (end.startReading() !== null) fail('incomplete', 'the connection failed before a complete PROXY protocol header');
  }

  /** Resets every connection still waiting for its header (shutdown deadline). */
  abortAll(): void {
    for (const pending of [...this.#pending]) {
      pending.finish();
      pending.end.reset();
    }
    this.onSettled?.();
  }

  /** Writes out the aggregated messages and stops the flush timer. */
  close(): void {
    clearInterval(this.#timer);
    this.#problems.flush();
  }
}
