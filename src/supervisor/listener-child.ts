/**
 * One listener as the supervisor runs it: its bound socket and the child process serving it.
 *
 * States: `binding` (the address could not be bound yet; retried with backoff), `starting` (child
 * spawned, not yet serving), `ready`, `backoff` (the child died; a new one is due), `draining`
 * (stop asked; the child finishes its connections), `stopped`. `#wantUp` is kept apart from the
 * state, so an exit that was asked for is never taken for a crash.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { formatEndpoint } from '../config/address.js';
import type { ListenerConfig } from '../config/types.js';
import { isChildMessage, PROTOCOL_VERSION, type ReportMessage, type SupervisorMessage } from '../ipc/protocol.js';
import type { Logger } from '../telemetry/logger.js';
import { Backoff } from './restart-policy.js';
import { bindListener, type BoundSocket } from './socket-owner.js';

const CHILD_ENTRY = fileURLToPath(new URL('../child/main.js', import.meta.url));
/** A child that is not serving this long after it was spawned is killed and restarted. */
const START_TIMEOUT_MS = 15_000;
/** After the drain deadline, how long a child gets to exit before it is killed. */
const KILL_GRACE_MS = 3_000;
const STDERR_LINES_KEPT = 10;

export type ListenerState = 'binding' | 'starting' | 'ready' | 'backoff' | 'draining' | 'stopped';

export interface ListenerChildHooks {
  /** A batch of events and counters from the child. */
  report(listener: string, report: ReportMessage): void;
  /** The child is gone (crash or stop): its connections are no longer open. */
  childGone(listener: string): void;
  /** The state changed (for /ready and metrics). */
  stateChanged?(listener: string, state: ListenerState): void;
}

export class ListenerChild {
  readonly config: ListenerConfig;
  readonly #logger: Logger;
  readonly #hooks: ListenerChildHooks;
  readonly #bindBackoff = new Backoff();
  readonly #restartBackoff = new Backoff();
  #state: ListenerState = 'stopped';
  #wantUp = false;
  #socket: BoundSocket | undefined;
  #child: ChildProcess | undefined;
  #timer: NodeJS.Timeout | undefined;
  #lastBindError = '';
  #stderrTail: string[] = [];
  #stopped: Promise<void> | undefined;
  #restarts = 0;

  constructor(config: ListenerConfig, logger: Logger, hooks: ListenerChildHooks) {
    this.config = config;
    this.#logger = logger;
    this.#hooks = hooks;
  }

  get state(): ListenerState {
    return this.#state;
  }

  get name(): string {
    return this.config.name;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** The address actually bound (port 0 resolved), once bound. */
  get boundAddress(): string | undefined {
    return this.#socket ? formatEndpoint(this.#socket.address, this.#socket.port) : undefined;
  }

  get restarts(): number {
    return this.#restarts;
  }

  start(): void {
    if (this.#wantUp) return;
    this.#wantUp = true;
    this.#bindAndSpawn();
  }

  #setState(state: ListenerState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.#hooks.stateChanged?.(this.name, state);
  }

  #bindAndSpawn(): void {
    this.#timer = undefined;
    if (!this.#wantUp) return;
    if (!this.#socket) {
      const result = bindListener(this.config);
      if (!result.ok) {
        this.#setState('binding');
        const delay = this.#bindBackoff.failed();
        // Said once per distinct error, not at every retry: the log must not fill with it.
        if (result.code !== this.#lastBindError) {
          this.#logger.error(`listener ${this.name}: ${result.message}`, { listener: this.name, code: result.code });
          this.#lastBindError = result.code;
        }
        this.#timer = setTimeout(() => this.#bindAndSpawn(), delay);
        return;
      }
      this.#socket = result.socket;
      this.#lastBindError = '';
      this.#bindBackoff.up();
    }
    this.#spawn();
  }

  #spawn(): void {
    this.#setState('starting');
    this.#stderrTail = [];
    const child = fork(CHILD_ENTRY, ['--listener', this.name], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'json',
    });
    this.#child = child;
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => this.#keepStderr(chunk));
    child.on('message', (message: unknown) => this.#onMessage(child, message));
    child.on('error', (error) => this.#logger.error(`listener ${this.name}: child process error: ${error.message}`, { listener: this.name }));
    child.on('exit', (code, signal) => this.#onExit(child, code, signal));
    const start: SupervisorMessage = { type: 'pp:start', v: PROTOCOL_VERSION, config: this.config, socket_family: this.#socket!.family };
    child.send(start, this.#socket!.handle as never, (error) => {
      if (error && this.#child === child) this.#logger.error(`listener ${this.name}: cannot hand the socket to the child: ${error.message}`);
    });
    this.#timer = setTimeout(() => {
      this.#logger.error(`listener ${this.name}: child did not start serving within ${START_TIMEOUT_MS / 1000}s; killing it`);
      child.kill('SIGKILL');
    }, START_TIMEOUT_MS);
  }

  #keepStderr(chunk: string): void {
    for (const line of chunk.split('\n')) {
      if (line.trim() === '') continue;
      this.#stderrTail.push(line.length > 500 ? `${line.slice(0, 500)}…` : line);
      if (this.#stderrTail.length > STDERR_LINES_KEPT) this.#stderrTail.shift();
    }
  }

  #onMessage(child: ChildProcess, message: unknown): void {
    if (child !== this.#child || !isChildMessage(message)) return;
    switch (message.type) {
      case 'pp:ready':
        clearTimeout(this.#timer);
        this.#timer = undefined;
        this.#restartBackoff.up();
        if (this.#state === 'starting') {
          this.#setState('ready');
          this.#logger.info(`listener ${this.name} up`, {
            listener: this.name,
            protocol: this.config.protocol,
            address: this.boundAddress ?? '',
            target: this.config.target_address,
            pid: child.pid ?? 0,
          });
        }
        break;
      case 'pp:report':
        this.#hooks.report(this.name, message);
        break;
      case 'pp:fatal':
        this.#logger.error(`listener ${this.name}: ${message.message}`, { listener: this.name, code: message.code });
        break;
    }
  }

  #onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (child !== this.#child) return;
    this.#child = undefined;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#hooks.childGone(this.name);
    if (!this.#wantUp) {
      this.#setState('stopped');
      return;
    }
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    const delay = this.#restartBackoff.failed();
    this.#restarts++;
    const tail = this.#stderrTail.length > 0 ? `; last stderr lines: ${this.#stderrTail.join(' | ')}` : '';
    this.#logger.error(`listener ${this.name}: child ${how}; restarting in ${delay} ms${tail}`, {
      listener: this.name,
      pid: child.pid ?? 0,
      ...(signal ? { signal } : { code: code ?? -1 }),
    });
    this.#setState('backoff');
    this.#timer = setTimeout(() => this.#bindAndSpawn(), delay);
  }

  /**
   * Stops accepting at once (the socket is closed here and in the child) and lets open connections
   * finish for up to `deadlineMs`; resolves when the child has exited.
   */
  stop(deadlineMs: number): Promise<void> {
    if (this.#stopped) return this.#stopped;
    this.#wantUp = false;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#socket?.handle.close();
    this.#socket = undefined;
    const child = this.#child;
    if (!child) {
      this.#setState('stopped');
      this.#stopped = Promise.resolve();
      return this.#stopped;
    }
    this.#setState('draining');
    this.#stopped = new Promise<void>((resolve) => {
      const kill = setTimeout(() => child.kill('SIGKILL'), deadlineMs + KILL_GRACE_MS);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      const drain: SupervisorMessage = { type: 'pp:drain', deadline_ms: deadlineMs };
      if (child.connected) child.send(drain, (error) => error && child.kill('SIGTERM'));
      else child.kill('SIGTERM');
    });
    return this.#stopped;
  }

  /** Immediate stop (second SIGINT): no draining. */
  kill(): void {
    this.#wantUp = false;
    clearTimeout(this.#timer);
    this.#socket?.handle.close();
    this.#socket = undefined;
    this.#child?.kill('SIGKILL');
  }
}
