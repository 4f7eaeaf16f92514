/**
 * Entry point of a listener's child process (`node .../child/main.js --listener NAME`; the name is
 * there for `ps`). It waits for `pp:start` with its configuration and listening socket, serves,
 * reports events and counters in batches, drains on `pp:drain`, and exits on its own as soon as the
 * supervisor is gone, so no orphan keeps a port.
 *
 * This file wires the proxy core (src/proxy, which knows sockets) to the IPC channel (src/ipc);
 * neither knows the other.
 */
import type { AddressInfo } from 'node:net';
import type { ListenerConfig } from '../config/types.js';
import { EXIT_CHILD_CONFIG, isSupervisorMessage, type ChildMessage, type StartMessage } from '../ipc/protocol.js';
import { ListenerPolicy } from '../policy/index.js';
import { TcpListener } from '../proxy/tcp-listener.js';
import { UdpListener } from '../proxy/udp-listener.js';
import { DenyAggregator } from '../telemetry/deny-aggregator.js';
import type { LogEvent } from '../telemetry/events.js';
import { ListenerStats } from '../telemetry/stats.js';
import { Reporter } from './reporter.js';

/** How often idle per-address limiter state is swept (a bounded slice each time). */
const SWEEP_INTERVAL_MS = 1000;

/** What main needs of a running listener, TCP or UDP. */
interface RunningListener {
  readonly active: number;
  drain(deadlineMs: number): Promise<void>;
}

let running: RunningListener | undefined;
let reporter: Reporter | undefined;
let draining = false;

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

async function start(message: StartMessage, handle: object | undefined): Promise<void> {
  if (running) return;
  const config: ListenerConfig = message.config;
  if (!handle) return fatal('PP_ERR_CHILD_NO_SOCKET', 'the supervisor sent no listening socket');

  const stats = new ListenerStats();
  reporter = new Reporter(stats, (report, done) => send(report, done));
  const emit = (event: LogEvent): void => reporter!.event(event);
  const denies = new DenyAggregator(emit, { listener: config.name, protocol: config.protocol });
  const policy = ListenerPolicy.fromConfig(config, () => performance.now());
  reporter.start();
  setInterval(() => policy.limiter.sweep(), SWEEP_INTERVAL_MS).unref();
  setInterval(() => denies.flush(), denies.intervalMs).unref();

  let address: AddressInfo;
  try {
    const deps = { config, policy, stats, denies, emit };
    const listener = config.protocol === 'tcp' ? new TcpListener(deps) : new UdpListener(deps, message.socket_family);
    address = await listener.listen(handle);
    running = listener;
  } catch (error) {
    const err = error as NodeJS.ErrnoException;
    return fatal(err.code ?? 'PP_ERR_LISTEN', `cannot serve on the socket: ${err.message}`);
  }
  send({ type: 'pp:ready', address: { address: address.address, port: address.port, family: address.family } });
}

async function drain(deadlineMs: number): Promise<void> {
  if (draining) return;
  draining = true;
  await running?.drain(deadlineMs);
  await reporter?.drain();
  process.exit(0);
}

process.title = `packetpony: ${process.argv[process.argv.indexOf('--listener') + 1] ?? 'listener'}`;
// Ctrl-C in a terminal signals the whole process group: only the supervisor decides what happens.
process.on('SIGINT', () => {});
// The supervisor's last resort before SIGKILL: end everything, report, exit.
process.on('SIGTERM', () => void drain(0));
// No supervisor, no reason to live: a dead supervisor must never leave a proxy holding a port.
process.on('disconnect', () => process.exit(0));
process.on('message', (message: unknown, handle: unknown) => {
  if (!isSupervisorMessage(message)) return;
  if (message.type === 'pp:start') void start(message, handle as object | undefined);
  else if (message.type === 'pp:drain') void drain(message.deadline_ms);
});
