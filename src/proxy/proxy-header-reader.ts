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
 * The socket must come paused and unread (pauseOnConnect); the header is read with 'readable'
 * and whatever the front sent after it is put back (unshift), so the relay's take-over of the
 * socket forwards it first, exactly as if the header had never been there.
 */
import type net from 'node:net';
import { formatEndpoint } from '../config/address.js';
import type { AcceptProxyProtocolSettings } from '../config/types.js';
import { Allowlist } from '../policy/index.js';
import type { LogEvent } from '../telemetry/events.js';
import { MessageAggregator } from '../telemetry/message-aggregator.js';
import type { ListenerStats } from '../telemetry/stats.js';
import { parseProxyHeader, type HostPort } from './proxy-protocol.js';

const AGGREGATE_INTERVAL_MS = 10_000;

/** The client as announced by the front; `destination` is null when it announced none. */
export type OnHeader = (socket: net.Socket, client: HostPort, destination: HostPort | null) => void;

interface Pending {
  readonly socket: net.Socket;
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
   * Reads the header of a freshly accepted, paused socket from `remote` (normalised) and hands the
   * socket on with the announced client, or closes it. `onHeader` may run synchronously.
   */
  read(socket: net.Socket, remote: string, port: number, onHeader: OnHeader): void {
    if (!this.#trusted.allows(remote)) {
      this.#stats.error('proxy_untrusted');
      this.#problems.report('untrusted', 'warning', `listener ${this.#name}: refused a connection from ${formatEndpoint(remote, port)}: not a trusted PROXY protocol source (accept_proxy_protocol.trusted)`, {
        listener: this.#name,
        client: formatEndpoint(remote, port),
      });
      reset(socket);
      return;
    }
    let buffered: Buffer | null = null;
    const pending: Pending = {
      socket,
      finish: () => {
        socket.off('readable', onReadable);
        socket.off('end', onEnd);
        socket.off('close', onEnd);
        socket.off('error', onError);
        clearTimeout(timer);
        this.#pending.delete(pending);
      },
    };
    const fail = (kind: string, reason: string): void => {
      pending.finish();
      this.#stats.error('proxy_header');
      this.#problems.report(`header:${kind}`, 'warning', `listener ${this.#name}: closed a connection from ${formatEndpoint(remote, port)}: ${reason}`, {
        listener: this.#name,
        client: formatEndpoint(remote, port),
      });
      reset(socket);
      this.onSettled?.();
    };
    const onReadable = (): void => {
      for (let chunk: unknown; (chunk = socket.read()) !== null; ) {
        if (Buffer.isBuffer(chunk)) buffered = buffered === null ? chunk : Buffer.concat([buffered, chunk]);
      }
      if (buffered === null) return;
      const result = parseProxyHeader(buffered);
      if (result.kind === 'partial') return;
      if (result.kind === 'invalid') {
        fail('malformed', `malformed PROXY protocol header: ${result.reason}`);
        return;
      }
      pending.finish();
      const rest = buffered.subarray(result.length);
      if (rest.length > 0) socket.unshift(rest);
      const { source, destination } = result.header;
      onHeader(socket, source ?? { ip: remote, port }, source === null ? null : destination);
      this.onSettled?.();
    };
    const onEnd = (): void => fail('incomplete', 'the connection ended before a complete PROXY protocol header');
    const onError = (): void => fail('incomplete', 'the connection failed before a complete PROXY protocol header');
    const timer = setTimeout(() => fail('timeout', `no complete PROXY protocol header within ${this.#timeoutMs} ms`), this.#timeoutMs);
    timer.unref();
    this.#pending.add(pending);
    socket.on('error', onError);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    socket.on('readable', onReadable);
  }

  /** Resets every connection still waiting for its header (shutdown deadline). */
  abortAll(): void {
    for (const pending of [...this.#pending]) {
      pending.finish();
      reset(pending.socket);
    }
    this.onSettled?.();
  }

  /** Writes out the aggregated messages and stops the flush timer. */
  close(): void {
    clearInterval(this.#timer);
    this.#problems.flush();
  }
}

function reset(socket: net.Socket): void {
  socket.on('error', noop);
  socket.resetAndDestroy();
}
