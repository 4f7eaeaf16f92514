/**
 * Active health checks of a listener's targets, run in the listener's own process (no IPC per
 * check): results go to the TargetPool, which reports state changes.
 *
 * Each target has its own timer: a check, then `interval` after it ended the next one, so checks of
 * one target never overlap and a slow target is not checked more often than a fast one. The first
 * checks run at once when the listener starts. A check:
 * - TCP: connect (trying the target's addresses in order), send the PROXY protocol header the
 *   target expects (v1: a line with the check connection's own endpoints, as the spec recommends
 *   for checks; v2: a LOCAL header), then `send` if set; with `expect`, wait for those bytes in
 *   what the target sends back. Passes once connected (and `send` written) without `expect`.
 * - UDP: one datagram (v2 LOCAL header first when the target expects PROXY protocol) with `send`,
 *   or empty. With `send`, the target must answer (with `expect` in the answer, if set). Without
 *   it there is nothing to wait for: only an ICMP port unreachable within `timeout` fails it.
 * Everything must happen within `timeout`, name resolution included.
 *
 * Without `health_check`, nothing is checked while targets are up. A target that a client
 * connection found dead is then probed (a plain connect every PROBE_INTERVAL_MS) until it answers
 * once, so a passive mark-down never lasts longer than needed.
 *
 * Timers are unref'd and stop() ends every check in flight: a listener that stops accepting (a
 * reload hands its work to a successor) stops checking at once.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import type { HealthCheckSettings, Protocol, ProxyProtocolVersion } from '../config/types.js';
import { encodeV1, encodeV2Local } from './proxy-protocol.js';
import type { PoolTarget, TargetPool } from './target-pool.js';
import { defaultResolver, type ResolvedAddress, type TargetResolver } from './target-resolver.js';

/** Without health_check: how often a target marked down by a failed connection is probed. */
export const PROBE_INTERVAL_MS = 2000;
/** Bytes of a TCP answer kept while looking for `expect` (beyond it, only the tail is kept). */
const MAX_ANSWER = 64 * 1024;

export interface HealthCheckerOptions {
  readonly pool: TargetPool;
  readonly protocol: Protocol;
  /** null: no active checks, only recovery probes of targets marked down (see the header). */
  readonly settings: HealthCheckSettings | null;
  readonly proxyProtocol: ProxyProtocolVersion;
  /** Recovery probes: how long one may take (the listener's connect_timeout, or PROBE_INTERVAL_MS). */
  readonly probeTimeoutMs?: number;
  readonly probeIntervalMs?: number;
  readonly resolver?: TargetResolver;
}

interface Plan {
  readonly interval: number;
  readonly timeout: number;
  readonly send: Buffer | null;
  readonly expect: Buffer | null;
}

export class HealthChecker {
  readonly #pool: TargetPool;
  readonly #protocol: Protocol;
  readonly #active: boolean;
  readonly #plan: Plan;
  readonly #proxyProtocol: ProxyProtocolVersion;
  readonly #resolver: TargetResolver;
  readonly #timers = new Map<PoolTarget, NodeJS.Timeout>();
  /** Sockets of checks in flight, ended by stop(). */
  readonly #sockets = new Set<net.Socket | dgram.Socket>();
  #running = false;

  constructor(options: HealthCheckerOptions) {
    this.#pool = options.pool;
    this.#protocol = options.protocol;
    this.#proxyProtocol = options.proxyProtocol;
    this.#resolver = options.resolver ?? defaultResolver;
    const settings = options.settings;
    this.#active = settings !== null;
    this.#plan = settings !== null
      ? {
          interval: settings.interval,
          timeout: settings.timeout,
          send: settings.send === '' ? null : Buffer.from(settings.send, 'latin1'),
          expect: settings.expect === '' ? null : Buffer.from(settings.expect, 'latin1'),
        }
      : {
          interval: options.probeIntervalMs ?? PROBE_INTERVAL_MS,
          timeout: options.probeTimeoutMs !== undefined && options.probeTimeoutMs > 0 ? options.probeTimeoutMs : PROBE_INTERVAL_MS,
          send: null,
          expect: null,
        };
  }

  /**
   * Starts checking every target now (with health_check); otherwise probes at once the targets
   * already down (inherited from a previous child) and arms targetDown() for the others.
   */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    for (const target of this.#pool.targets) {
      if (this.#active || !target.up) this.#schedule(target, 0);
    }
  }

  /** A target went down. Without health_check, it is probed until it answers once. */
  targetDown(target: PoolTarget): void {
    if (this.#running && !this.#active && !this.#timers.has(target)) this.#schedule(target, this.#plan.interval);
  }

  /** No more checks: timers cleared, checks in flight abandoned. Idempotent. */
  stop(): void {
    this.#running = false;
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    for (const socket of this.#sockets) closeQuietly(socket);
    this.#sockets.clear();
  }

  #schedule(target: PoolTarget, delay: number): void {
    const timer = setTimeout(() => void this.#run(target), delay);
    timer.unref();
    this.#timers.set(target, timer);
  }

  async #run(target: PoolTarget): Promise<void> {
    const failure = await this.check(target);
    if (!this.#running) return;
    this.#timers.delete(target);
    if (failure === null) this.#pool.checkPassed(target);
    else this.#pool.checkFailed(target, failure);
    // Probes stop once the target is back; real checks go on for good.
    if (this.#active || !target.up) this.#schedule(target, this.#plan.interval);
  }

  /** One check of `target`: null when it passed, else why it failed. */
  check(target: PoolTarget): Promise<string | null> {
    return this.#protocol === 'tcp' ? this.#checkTcp(target) : this.#checkUdp(target);
  }

  async #addresses(target: PoolTarget): Promise<readonly ResolvedAddress[]> {
    const host = target.endpoint.host === '' ? '127.0.0.1' : target.endpoint.host;
    return this.#resolver.peek(host) ?? (await this.#resolver.resolve(host));
  }

  #checkTcp(target: PoolTarget): Promise<string | null> {
    const { timeout, send, expect } = this.#plan;
    const port = target.endpoint.port;
    return new Promise((resolve) => {
      let done = false;
      let socket: net.Socket | null = null;
      let stage = 'resolving the name';
      const finish = (failure: string | null): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (socket !== null) {
          this.#sockets.delete(socket);
          socket.destroy();
        }
        resolve(failure);
      };
      const timer = setTimeout(() => finish(`no answer within ${timeout} ms (${stage})`), timeout);
      timer.unref();
      const attempt = (addresses: readonly ResolvedAddress[], i: number, lastError: string): void => {
        if (done) return;
        const address = addresses[i];
        if (address === undefined) {
          finish(lastError);
          return;
        }
        stage = 'connecting';
        const s = net.connect({ host: address.address, port, family: address.family });
        socket = s;
        this.#sockets.add(s);
        s.on('error', (err: Error) => {
          if (done) return;
          if (stage === 'connecting') {
            this.#sockets.delete(s);
            s.destroy();
            socket = null;
            attempt(addresses, i + 1, err.message);
          } else finish(`${stage}: ${err.message}`);
        });
        s.once('connect', () => {
          stage = 'sending';
          const header = this.#tcpHeader(s);
          if (header !== null) s.write(header);
          if (expect === null) {
            if (send === null) finish(null);
            else s.write(send, () => finish(null));
            return;
          }
          stage = 'waiting for the expected answer';
          if (send !== null) s.write(send);
          let answer = Buffer.alloc(0);
          s.on('data', (chunk: Buffer) => {
            answer = Buffer.concat([answer, chunk]);
            if (answer.includes(expect)) finish(null);
            else if (answer.length > MAX_ANSWER) answer = answer.subarray(answer.length - expect.length);
          });
          s.once('end', () => finish('the target closed the connection without the expected answer'));
        });
      };
      this.#addresses(target).then(
        (addresses) => attempt(addresses, 0, 'no address'),
        (err: unknown) => finish((err as Error).message),
      );
    });
  }

  #tcpHeader(socket: net.Socket): Buffer | null {
    if (this.#proxyProtocol === 'v2') return encodeV2Local();
    if (this.#proxyProtocol === 'v1') {
      return encodeV1(
        { ip: socket.localAddress ?? '0.0.0.0', port: socket.localPort ?? 0 },
        { ip: socket.remoteAddress ?? '0.0.0.0', port: socket.remotePort ?? 0 },
      );
    }
    return null;
  }

  #checkUdp(target: PoolTarget): Promise<string | null> {
    const { timeout, send, expect } = this.#plan;
    const port = target.endpoint.port;
    return new Promise((resolve) => {
      let done = false;
      let socket: dgram.Socket | null = null;
      const finish = (failure: string | null): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (socket !== null) {
          this.#sockets.delete(socket);
          closeQuietly(socket);
        }
        resolve(failure);
      };
      // Without `send` there is no answer to wait for: silence is a pass.
      const timer = setTimeout(() => finish(send === null ? null : `no answer within ${timeout} ms`), timeout);
      timer.unref();
      this.#addresses(target).then(
        (addresses) => {
          if (done) return;
          const address = addresses[0]!;
          const s = dgram.createSocket(address.family === 6 ? 'udp6' : 'udp4');
          socket = s;
          this.#sockets.add(s);
          s.on('error', (err: NodeJS.ErrnoException) => {
            finish(err.code === 'ECONNREFUSED' ? `port unreachable (ICMP) at ${address.address}:${port}` : err.message);
          });
          s.on('message', (msg: Buffer) => {
            if (expect === null || msg.includes(expect)) finish(null);
          });
          s.connect(port, address.address, () => {
            const probe = send ?? Buffer.alloc(0);
            s.send(this.#proxyProtocol === 'v2' ? [encodeV2Local(), probe] : probe);
          });
        },
        (err: unknown) => finish((err as Error).message),
      );
    });
  }
}

function closeQuietly(socket: net.Socket | dgram.Socket): void {
  try {
    if (socket instanceof net.Socket) socket.destroy();
    else socket.close();
  } catch {
    // already closed
  }
}
