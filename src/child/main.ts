/**
 * Entry point of a listener's child process. Its command line shows `packetpony: NAME` in `ps`.
 * It waits for `pp:start` with its configuration and listening socket, serves, reports events and
 * counters in batches, drains on `pp:drain`, hands over to its successor on `pp:handover`, and exits
 * on its own as soon as the supervisor is gone, so no orphan keeps a port.
 *
 * This file wires the proxy core (src/proxy, which knows sockets) to the IPC channel (src/ipc);
 * neither knows the other.
 */
import type { AddressInfo } from 'node:net';
import type { ListenerConfig } from '../config/types.js';
import {
  EXIT_CHILD_CONFIG,
  PROTOCOL_VERSION,
  isSupervisorMessage,
  type ChildMessage,
  type ReleaseMessage,
  type StartMessage,
  type TargetStates,
} from '../ipc/protocol.js';
import { startSharedLimits, type LimitSync } from '../fleet/index.js';
import { ListenerPolicy, RateLimiter, type ConnectionTotal as TotalCounter, type LimiterSnapshot } from '../policy/index.js';
import { TcpListener } from '../proxy/tcp-listener.js';
import { trimNativeHeap } from '../native/addon.js';
import { ConnectionTotal } from '../native/connection-total.js';
import { UdpListener } from '../proxy/udp-listener.js';
import { DenyAggregator } from '../telemetry/deny-aggregator.js';
import type { LogEvent } from '../telemetry/events.js';
import { ListenerStats } from '../telemetry/stats.js';
import { loopClock } from './loop-clock.js';
import { MemoryReclaimer } from './memory-reclaimer.js';
import { pathSwitchesFrom } from './path-switches.js';
import { Reporter } from './reporter.js';

/** How often idle per-address limiter state is swept (a bounded slice each time). */
const SWEEP_INTERVAL_MS = 1000;
/** PACKETPONY_UDP_BATCH and PACKETPONY_TCP_SEND_NOW, read once, here; the data path gets them as options. */
const PATHS = pathSwitchesFrom(process.env);

/** What main needs of a running listener, TCP or UDP. */
interface RunningListener {
  readonly active: number;
  listen(handle: object): Promise<AddressInfo>;
  stopAccepting(): void;
  finish(deadlineMs: number): Promise<void>;
}

interface Prepared {
  readonly start: StartMessage;
  readonly handle: object;
  readonly stats: ListenerStats;
  readonly reporter: Reporter;
  readonly denies: DenyAggregator;
  readonly emit: (event: LogEvent) => void;
}

let prepared: Prepared | undefined;
let policy: ListenerPolicy | undefined;
let running: RunningListener | undefined;
let limitSync: LimitSync | null = null;
let stopping = false;

function send(message: ChildMessage, done?: (error: Error | null) => void): void {
  if (!process.connected) {
    done?.(new Error('the supervisor is gone'));
    return;
  }
  process.send!(message, undefined, {}, (error) => done?.(error ?? null));
}

async function fatal(code: string, message: string): Promise<never> {
  await new Promise<void>((resolve) => send({ type: 'pp:fatal', code, message }, () => resolve()));
  process.exit(EXIT_CHILD_CONFIG);
}

function prepare(start: StartMessage, sent: object | undefined): void {
  if (prepared) return;
  // An inherited descriptor is served with the public listen({ fd }) / bind({ fd }).
  const handle = start.socket_fd !== null ? { fd: start.socket_fd } : sent;
  if (!handle) {
    void fatal('PP_ERR_CHILD_NO_SOCKET', 'the supervisor sent no listening socket');
    return;
  }
  const stats = new ListenerStats();
  const reporter = new Reporter(stats, (report, done) => send(report, done), start.config.name, start.config.protocol);
  const emit = (event: LogEvent): void => reporter.event(event);
  const denies = new DenyAggregator(emit, { listener: start.config.name, protocol: start.config.protocol });
  reporter.start();
  setInterval(() => denies.flush(), denies.intervalMs).unref();
  prepared = { start, handle, stats, reporter, denies, emit };
  if (start.hold) send({ type: 'pp:prepared' });
  else void begin(null, start.target_states);
}

/**
 * With several workers, max_total_connections counts on the listener's shared page, in this
 * child's slot (src/native/connection-total.ts); undefined: the limiter counts alone.
 */
function sharedTotal(start: StartMessage): TotalCounter | undefined {
  if (start.connection_total === null) return undefined;
  const { fd, slot } = start.connection_total;
  let page: ConnectionTotal;
  try {
    page = ConnectionTotal.open(fd);
  } catch (error) {
    void fatal('PP_ERR_CHILD_TOTAL', `cannot count max_total_connections with the other workers: ${(error as Error).message}`);
    throw error;
  }
  return { acquire: (max) => page.acquire(slot, max), release: () => page.release(slot) };
}

/** `targetStates`: what the listener's previous child last reported of its targets. */
async function begin(snapshot: LimiterSnapshot | null, targetStates: TargetStates | null): Promise<void> {
  if (!prepared || running) return;
  const { start, handle, stats, denies, emit } = prepared;
  const config: ListenerConfig = start.config;
  const clock = loopClock();
  const limiterOptions = { shared: config.shared_limits !== null, total: sharedTotal(start) };
  // The previous child's windows and open connections carry over: a reload is no free pass.
  policy = snapshot
    ? ListenerPolicy.withLimiter(config, RateLimiter.restore(config.rate_limits, clock, snapshot, limiterOptions))
    : ListenerPolicy.fromConfig(config, clock, limiterOptions);
  const limiter = policy.limiter;
  // In the background: the limiter decides alone, and the fleet's counts arrive when they do.
  limitSync = startSharedLimits(config, limiter, stats, clock, emit);
  const reclaimer = new MemoryReclaimer(MemoryReclaimer.exposedGc(), trimNativeHeap);
  setInterval(() => {
    limiter.sweep();
    stats.tracked = limiter.trackedAddresses;
    reclaimer.observe(stats.tracked);
  }, SWEEP_INTERVAL_MS).unref();
  const deps = { config, policy, stats, denies, emit, targetStates, paths: PATHS };
  const listener: RunningListener = config.protocol === 'tcp' ? new TcpListener(deps) : new UdpListener(deps, start.socket_family);
  let address: AddressInfo;
  try {
    address = await listener.listen(handle);
  } catch (error) {
    const err = error as NodeJS.ErrnoException;
    return fatal(err.code ?? 'PP_ERR_LISTEN', `cannot serve on the socket: ${err.message}`);
  }
  running = listener;
  send({ type: 'pp:ready', address: { address: address.address, port: address.port, family: address.family } });
}

/** Stops accepting, optionally hands the limiter state on, finishes open connections, exits 0. */
async function stop(deadlineMs: number, handover: boolean): Promise<void> {
  if (stopping) return;
  stopping = true;
  running?.stopAccepting();
  if (handover) send({ type: 'pp:handover-state', snapshot: policy?.limiter.snapshot() ?? null });
  await running?.finish(deadlineMs);
  // Last, so that the connections just finished leave the fleet's open counts.
  await limitSync?.stop();
  await prepared?.reporter.drain();
  process.exit(0);
}

function isOtherVersionStart(message: unknown): message is { v: unknown } {
  const m = message as { type?: unknown; v?: unknown } | null;
  return typeof m === 'object' && m !== null && m.type === 'pp:start' && m.v !== PROTOCOL_VERSION;
}

function release(message: ReleaseMessage): void {
  if (!policy) return;
  if (message.all) policy.limiter.clearInherited();
  else for (const address of message.addresses) policy.limiter.releaseInherited(address);
}

process.title = `packetpony: ${process.argv[process.argv.indexOf('--listener') + 1] ?? 'listener'}`;
// Ctrl-C in a terminal signals the whole process group: only the supervisor decides what happens.
process.on('SIGINT', () => {});
// The supervisor's last resort before SIGKILL: end everything, report, exit.
process.on('SIGTERM', () => void stop(0, false));
// No supervisor, no reason to live: a dead supervisor must never leave a proxy holding a port.
process.on('disconnect', () => process.exit(0));
process.on('message', (message: unknown, handle: unknown) => {
  if (isOtherVersionStart(message)) {
    // A supervisor started from older (or newer) files than this child's: an upgrade on disk under
    // a running daemon. Their reports would not be understood: say so, once, and stop.
    void fatal('PP_ERR_CHILD_PROTOCOL', `the supervisor speaks IPC protocol v${String(message.v)}, this child v${PROTOCOL_VERSION}: restart the daemon after an upgrade (systemctl restart packetpony)`);
    return;
  }
  if (!isSupervisorMessage(message)) return;
  switch (message.type) {
    case 'pp:start':
      prepare(message, handle as object | undefined);
      break;
    case 'pp:begin':
      void begin(message.snapshot, message.target_states);
      break;
    case 'pp:drain':
      void stop(message.deadline_ms, false);
      break;
    case 'pp:handover':
      void stop(message.deadline_ms, true);
      break;
    case 'pp:release':
      release(message);
      break;
  }
});
