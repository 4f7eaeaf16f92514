/**
 * One listener as the supervisor runs it: its bound socket and the child process serving it.
 *
 * States: `binding` (the address could not be bound yet; retried with backoff), `starting` (child
 * spawned, not yet serving), `ready`, `backoff` (the child died; a new one is due), `draining`
 * (stop asked; the child finishes its connections), `stopped`. `#wantUp` is kept apart from the
 * state, so an exit that was asked for is never taken for a crash.
 *
 * Live reload (`replace`) never leaves the socket without a server able to take its backlog: the
 * new child is spawned and prepared first, the old one then stops accepting and hands over its
 * limiter state, the new one starts accepting with that state. Connection attempts in between wait
 * in the kernel's backlog (the supervisor keeps the socket open throughout): none is refused. The
 * old child finishes its connections in the background; as they close, their per-address slots are
 * released in the new child.
 *
 * The children beyond the serving one (retired, finishing connections) and what the connection
 * total holds for each child are kept in retiring-children.ts. Longer than the house's ~450 lines
 * still: the lifecycle, the restart path and the reload's phases (prepareReplacement, handOver,
 * commit) share #current, #state, #socket and #seat, and each phase is a step of one state machine;
 * cut apart, they would pass those back and forth.
 */
import { formatEndpoint } from '../config/address.js';
import { usesTargetPool, type ListenerConfig } from '../config/types.js';
import {
  isTargetStates,
  PROTOCOL_VERSION,
  type ChildMessage,
  type ReleaseMessage,
  type ReportMessage,
  type TargetStates,
  type LimiterSnapshot,
  type WorkerPlace,
} from '../ipc/protocol.js';
import type { Logger } from '../telemetry/logger.js';
import { ChildProcessHandle, CHILD_ENTRY, INHERITED_SOCKET_FD, INHERITED_TOTAL_FD } from './child-process.js';
import { Backoff } from './restart-policy.js';
import { protocolPath } from './platform-report.js';
import { RetiringChildren } from './retiring-children.js';
import { bindListener, type BoundSocket } from './socket-owner.js';

/** A child that is not serving this long after it was spawned is killed and restarted. */
const START_TIMEOUT_MS = 15_000;
/** How long a replaced child gets to hand over its limiter state. */
const HANDOVER_TIMEOUT_MS = 5_000;

export type ListenerState = 'binding' | 'starting' | 'ready' | 'backoff' | 'draining' | 'stopped';

export interface ListenerChildHooks {
  /** A batch of events and counters from one of the listener's children. */
  report(listener: string, report: ReportMessage, pid: number): void;
  /** That child is gone (crash, stop or hand-over done): its connections are no longer open. */
  childGone(listener: string, pid: number): void;
  /** The state changed (for /ready and metrics). */
  stateChanged?(listener: string, state: ListenerState): void;
  /** The child of worker `worker` (1-based) died and will be restarted. */
  childRestarting?(listener: string, worker: number): void;
}

export interface ReplaceResult {
  readonly ok: boolean;
  readonly message?: string;
}

/**
 * One worker of a listener with several (src/supervisor/listener-group.ts): its place in the group,
 * the group's socket for it (bound, kept and closed by the group, never here), and the listener's
 * shared connection total.
 */
export interface WorkerSeat {
  readonly place: WorkerPlace;
  readonly socket: BoundSocket;
  readonly total: TotalSlots | null;
}

/** The group's connection total: a slot for each child process that counts on it. */
export interface TotalSlots {
  readonly fd: number;
  /** A free slot, or -1 when every one is taken. */
  take(): number;
  /** The process of `slot` is gone: its connections come off the total and the slot is free. */
  give(slot: number): void;
  /** One more connection on `slot`, never refused: one a predecessor that counted alone still has open. */
  charge(slot: number): void;
  /** One connection fewer on `slot`. */
  discharge(slot: number): void;
}

/** A reload's next child, held until commit (null child: nothing served, so commit restarts). */
export interface Replacement {
  readonly child: ChildProcessHandle | null;
  readonly config: ListenerConfig;
  readonly seat: WorkerSeat | undefined;
  readonly socket: BoundSocket | undefined;
  readonly moved: boolean;
}

export interface ListenerChildOptions {
  readonly childEntry?: string;
  /** A worker of a group; without it the listener binds and owns its socket itself. */
  readonly seat?: WorkerSeat;
  /**
   * Where the slots that a predecessor's closed connections free go; default: this listener's
   * serving child. A group whose workers changed in number sends them to every worker.
   */
  readonly release?: (message: ReleaseMessage, from: ListenerChild) => void;
}

/** Whether two configurations listen on the same socket. */
export function sameSocket(a: ListenerConfig, b: ListenerConfig): boolean {
  return a.protocol === b.protocol && a.listen.host === b.listen.host && a.listen.port === b.listen.port && a.ipv6_only === b.ipv6_only;
}

export class ListenerChild {
  #config: ListenerConfig;
  readonly #logger: Logger;
  readonly #hooks: ListenerChildHooks;
  readonly #entry: string;
  readonly #bindBackoff = new Backoff();
  readonly #restartBackoff = new Backoff();
  #state: ListenerState = 'stopped';
  #wantUp = false;
  #socket: BoundSocket | undefined;
  #current: ChildProcessHandle | undefined;
  /** The children finishing connections, and the slots on the connection total of every child. */
  readonly #retiring = new RetiringChildren((message) => this.#sendRelease(message));
  #timer: NodeJS.Timeout | undefined;
  #lastBindError = '';
  #stopped: Promise<void> | undefined;
  #restarts = 0;
  #replacing: Promise<unknown> = Promise.resolve();
  /**
   * The target states the listener's children last reported (with several targets or health
   * checks): a restarted or reloaded child starts from them instead of every target up.
   */
  #targetStates: TargetStates | null = null;

  #seat: WorkerSeat | undefined;
  readonly #release: ((message: ReleaseMessage, from: ListenerChild) => void) | undefined;

  constructor(config: ListenerConfig, logger: Logger, hooks: ListenerChildHooks, options: ListenerChildOptions = {}) {
    this.#config = config;
    this.#logger = logger;
    this.#hooks = hooks;
    this.#entry = options.childEntry ?? CHILD_ENTRY;
    this.#seat = options.seat;
    this.#socket = options.seat?.socket;
    this.#release = options.release;
  }

  /** This worker's place among the listener's workers ({0, 1} alone). */
  get place(): WorkerPlace {
    return this.#seat?.place ?? { index: 0, count: 1 };
  }

  /** Whether children replaced by a reload still finish connections whose slots they hold. */
  get inheriting(): boolean {
    return this.#retiring.inheriting;
  }

  /** Sends a release to the serving child. */
  releaseInCurrent(message: ReleaseMessage): void {
    this.#current?.send(message).catch(() => {});
  }

  /** What the log and `ps` call this worker: the listener's name, "/N" after it with several. */
  get #label(): string {
    const place = this.place;
    return place.count > 1 ? `${this.name}/${place.index + 1}` : this.name;
  }

  #ownsSocket(): boolean {
    return this.#seat === undefined;
  }

  /** Whether a group gave this listener its seat (and so its socket). */
  get seated(): boolean {
    return this.#seat !== undefined;
  }

  /** The socket this listener bound itself (no seat), once bound. */
  ownSocket(): BoundSocket | undefined {
    return this.#ownsSocket() ? this.#socket : undefined;
  }

  /** Resolves once stop() or stopAfterHandover() was called and every child has exited. */
  get stopped(): Promise<void> {
    return this.#stopped ?? new Promise(() => {});
  }

  get config(): ListenerConfig {
    return this.#config;
  }

  get state(): ListenerState {
    return this.#state;
  }

  get name(): string {
    return this.#config.name;
  }

  /** PID of the child serving now. */
  get pid(): number | undefined {
    return this.#current?.pid;
  }

  /** PIDs of every child of this listener, serving or finishing connections. */
  get pids(): number[] {
    return [this.#current, ...this.#retiring.children].flatMap((c) => (c?.pid !== undefined && c.alive ? [c.pid] : []));
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

  #clearTimer(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #bind(config: ListenerConfig): BoundSocket | undefined {
    const result = bindListener(config);
    if (result.ok) {
      this.#lastBindError = '';
      return result.socket;
    }
    // Said once per distinct error, not at every retry: the log must not fill with it.
    if (result.code !== this.#lastBindError) {
      this.#logger.error(`listener ${config.name}: ${result.message}`, { listener: config.name, code: result.code });
      this.#lastBindError = result.code;
    }
    return undefined;
  }

  #bindAndSpawn(): void {
    this.#clearTimer();
    if (!this.#wantUp) return;
    if (!this.#socket && this.#seat) this.#socket = this.#seat.socket;
    if (!this.#socket) {
      this.#socket = this.#bind(this.#config);
      if (!this.#socket) {
        this.#setState('binding');
        this.#timer = setTimeout(() => this.#bindAndSpawn(), this.#bindBackoff.failed());
        return;
      }
      this.#bindBackoff.up();
    }
    this.#current = this.#spawn(this.#config, this.#socket, false, this.#seat);
    this.#setState('starting');
    this.#armStartTimer(this.#current);
  }

  #spawn(config: ListenerConfig, socket: BoundSocket, hold: boolean, seat: WorkerSeat | undefined): ChildProcessHandle {
    // Without a pool nothing is reported: states kept from before would be stale by the time a
    // later reload brings targets back.
    if (!usesTargetPool(config)) this.#targetStates = null;
    const transfer = socket.transfer;
    const inherited = transfer.kind === 'fd';
    const total = seat?.total ?? null;
    const place = seat?.place ?? { index: 0, count: 1 };
    const title = place.count > 1 ? `${config.name}/${place.index + 1}` : config.name;
    const child = new ChildProcessHandle(
      config.name,
      (c, message) => this.#onMessage(c, message),
      this.#entry,
      { socketFd: inherited ? transfer.fd : undefined, totalFd: total?.fd },
      title,
    );
    const slot = this.#retiring.takeSlot(child, total);
    void child.exited.then(() => this.#onExit(child));
    child
      .send(
        {
          type: 'pp:start',
          v: PROTOCOL_VERSION,
          config,
          socket_family: socket.family,
          socket_fd: inherited ? INHERITED_SOCKET_FD : null,
          hold,
          target_states: hold ? null : this.#targetStates,
          worker: place,
          // No free slot (more than a page's worth of processes alive): the child counts alone.
          connection_total: slot >= 0 ? { fd: INHERITED_TOTAL_FD, slot } : null,
        },
        inherited ? undefined : transfer.handle,
      )
      .catch((error: Error) => {
        if (child.alive) this.#logger.error(`listener ${title}: cannot hand the socket to the child: ${error.message}`);
      });
    return child;
  }

  #armStartTimer(child: ChildProcessHandle): void {
    this.#clearTimer();
    this.#timer = setTimeout(() => {
      this.#logger.error(`listener ${this.name}: child did not start serving within ${START_TIMEOUT_MS / 1000}s; killing it`);
      child.kill('SIGKILL');
    }, START_TIMEOUT_MS);
  }

  #onMessage(child: ChildProcessHandle, message: ChildMessage): void {
    switch (message.type) {
      case 'pp:ready':
        if (child !== this.#current) return;
        this.#clearTimer();
        this.#restartBackoff.up();
        this.#setState('ready');
        const path = protocolPath(this.#config.protocol);
        this.#logger.info(`listener ${this.#label} up`, {
          listener: this.name,
          ...(this.place.count > 1 ? { worker: this.place.index + 1, workers: this.place.count } : {}),
          protocol: this.#config.protocol,
          address: this.boundAddress ?? '',
          target: this.#config.target_address,
          pid: child.pid ?? 0,
          relay: path.relay,
          // Several workers always bind with the addon, in one reuseport group.
          socket: this.place.count > 1 ? 'addon-reuseport' : path.socket,
        });
        break;
      case 'pp:report':
        // Only a child whose targets are checked reports them (a replaced one stops at hand-over).
        if (message.stats.targets !== undefined && isTargetStates(message.stats.targets)) this.#targetStates = message.stats.targets;
        this.#hooks.report(this.name, message, child.pid ?? 0);
        this.#retiring.report(child, message);
        break;
      case 'pp:fatal':
        this.#logger.error(`listener ${this.name}: ${message.message}`, { listener: this.name, code: message.code });
        break;
      default:
        break;
    }
  }

  #sendRelease(message: ReleaseMessage): void {
    if (this.#release) this.#release(message, this);
    else this.releaseInCurrent(message);
  }

  #onExit(child: ChildProcessHandle): void {
    const retired = this.#retiring.exited(child);
    this.#hooks.childGone(this.name, child.pid ?? 0);
    if (retired) return;
    if (child !== this.#current) return; // a held child that never took over
    this.#current = undefined;
    this.#clearTimer();
    if (!this.#wantUp) {
      this.#setState('stopped');
      return;
    }
    const delay = this.#restartBackoff.failed();
    this.#restarts++;
    const tail = child.stderrTail.length > 0 ? `; last stderr lines: ${child.stderrTail.join(' | ')}` : '';
    this.#logger.error(`listener ${this.#label}: child ${child.describeExit()}; restarting in ${delay} ms${tail}`, {
      listener: this.name,
      pid: child.pid ?? 0,
    });
    this.#hooks.childRestarting?.(this.name, this.place.index + 1);
    this.#setState('backoff');
    this.#timer = setTimeout(() => this.#bindAndSpawn(), delay);
  }

  /**
   * Live reload of this listener with a changed configuration (same name). Resolves once the new
   * child serves, or with ok: false — the running child untouched — when the new one cannot start.
   */
  replace(config: ListenerConfig, deadlineMs: number): Promise<ReplaceResult> {
    const run = this.#replacing.then(() => this.#replace(config, deadlineMs));
    this.#replacing = run.catch(() => undefined);
    return run;
  }

  async #replace(config: ListenerConfig, deadlineMs: number): Promise<ReplaceResult> {
    const prepared = await this.prepareReplacement(config, this.#seat);
    if (!('child' in prepared)) return prepared;
    const snapshot = await this.handOver(prepared, deadlineMs);
    return this.commit(prepared, snapshot);
  }

  /**
   * A reload's first step: the next child on `config` (and, in a group, its new seat), spawned and
   * prepared but not serving; the running child is untouched. Then handOver(), then commit(); or
   * abandon() to keep the running child.
   */
  async prepareReplacement(config: ListenerConfig, seat: WorkerSeat | undefined): Promise<Replacement | ReplaceResult> {
    const moved = !sameSocket(this.#config, config);
    if (!this.#wantUp || !this.#current || this.#state !== 'ready') return { child: null, config, seat, socket: undefined, moved };
    // A group binds its sockets itself; a listener alone binds a moved address here.
    const socket = seat ? seat.socket : moved ? this.#bind(config) : this.#socket!;
    if (!socket) return { ok: false, message: `cannot listen on ${config.listen_address}; the previous address keeps serving` };
    const next = this.#spawn(config, socket, true, seat);
    try {
      await next.waitFor('pp:prepared', START_TIMEOUT_MS);
    } catch (error) {
      next.kill('SIGKILL');
      if (moved && !seat) socket.close();
      const tail = next.stderrTail.length > 0 ? ` (${next.stderrTail.join(' | ')})` : '';
      return { ok: false, message: `the new child could not start: ${(error as Error).message}${tail}; the running one keeps serving` };
    }
    return { child: next, config, seat, socket, moved };
  }

  /**
   * A group's new worker, for a reload that grows the group: its first child, held like a
   * replacement, begins on commit() with the state the group hands it.
   */
  async prepareFirst(config: ListenerConfig, seat: WorkerSeat): Promise<Replacement | ReplaceResult> {
    this.#wantUp = true;
    this.#config = config;
    this.#seat = seat;
    this.#socket = seat.socket;
    const next = this.#spawn(config, seat.socket, true, seat);
    try {
      await next.waitFor('pp:prepared', START_TIMEOUT_MS);
    } catch (error) {
      next.kill('SIGKILL');
      this.#wantUp = false;
      return { ok: false, message: `a new worker could not start: ${(error as Error).message}` };
    }
    return { child: next, config, seat, socket: seat.socket, moved: false };
  }

  /**
   * A worker a shrinking group drops: its child hands its limiter state over (for the workers
   * that take its addresses) and finishes its connections; nothing replaces it.
   */
  async stopAfterHandover(deadlineMs: number): Promise<LimiterSnapshot | null> {
    const old = this.#current;
    if (!old || this.#state !== 'ready') {
      void this.stop(deadlineMs);
      return null;
    }
    const snapshot = await this.handOver({ child: old, config: this.#config, seat: this.#seat, socket: this.#socket, moved: false }, deadlineMs);
    void this.stop(deadlineMs);
    return snapshot;
  }

  /** Drops a prepared replacement: the running child serves on. */
  abandon(replacement: Replacement): void {
    replacement.child?.kill('SIGKILL');
    if (replacement.moved && !replacement.seat) replacement.socket?.close();
  }

  /**
   * The serving child stops accepting and hands its limiter state over (null when it has none or
   * does not answer); it finishes its connections in the background. Until commit(), connection
   * attempts wait in the kernel's backlog.
   */
  async handOver(replacement: Replacement, deadlineMs: number): Promise<LimiterSnapshot | null> {
    const old = this.#current;
    if (replacement.child === null || !old) return null;
    let snapshot: LimiterSnapshot | null = null;
    try {
      const state = old.waitFor('pp:handover-state', HANDOVER_TIMEOUT_MS);
      await old.send({ type: 'pp:handover', deadline_ms: deadlineMs });
      snapshot = (await state).snapshot;
    } catch {
      // The old child died or did not answer: the new one starts with fresh limiter state.
    }
    this.#retiring.retire(old, deadlineMs, true);
    this.#retiring.handedOver(old, replacement.seat?.total ?? undefined, snapshot);
    this.#current = undefined;
    return snapshot;
  }

  /** The replacement serves, from `snapshot`. Resolves once it does. */
  async commit(replacement: Replacement, snapshot: LimiterSnapshot | null): Promise<ReplaceResult> {
    const { config, seat, moved } = replacement;
    const next = replacement.child;
    // A socket this listener bound itself goes once the new one is another (moved, or now a group's).
    const ownedBefore = this.#ownsSocket() ? this.#socket : undefined;
    if (next === null) {
      // Nothing was serving to hand over from: start over with the new configuration.
      this.#clearTimer();
      this.#config = config;
      this.#seat = seat;
      if (!this.#wantUp) return { ok: true };
      const old = this.#current;
      if (old) {
        this.#current = undefined;
        this.#retiring.retire(old, 0, false);
      }
      if (seat) {
        if (ownedBefore !== undefined && ownedBefore !== seat.socket) ownedBefore.close();
        this.#socket = seat.socket;
      } else if (moved) {
        this.#socket?.close();
        this.#socket = undefined;
      }
      this.#bindAndSpawn();
      return { ok: true };
    }
    if (ownedBefore !== undefined && ownedBefore !== replacement.socket) ownedBefore.close();
    this.#socket = replacement.socket;
    this.#config = config;
    this.#seat = seat;
    if (!next.alive) {
      // It died while held, so its exit was not taken for the serving child's: start one anew.
      this.#bindAndSpawn();
      return { ok: false, message: 'the new child exited before taking over; a new one is starting' };
    }
    this.#current = next;
    this.#setState('starting');
    this.#armStartTimer(next);
    try {
      // The old child's last report came before its hand-over state: these are its final states.
      await next.send({ type: 'pp:begin', snapshot, target_states: this.#targetStates });
      await next.waitFor('pp:ready', START_TIMEOUT_MS);
    } catch {
      // Its exit takes the usual crash path: restarted with backoff on the new configuration.
      return { ok: false, message: 'the new child failed after taking over; it is being restarted' };
    }
    return { ok: true };
  }

  /**
   * Stops accepting at once (the socket is closed here and in the children) and lets open
   * connections finish for up to `deadlineMs`; resolves when every child of the listener has exited.
   */
  stop(deadlineMs: number): Promise<void> {
    if (this.#stopped) return this.#stopped;
    this.#wantUp = false;
    this.#clearTimer();
    if (this.#ownsSocket()) this.#socket?.close();
    this.#socket = undefined;
    const current = this.#current;
    if (current) {
      this.#current = undefined;
      this.#retiring.retire(current, deadlineMs, false);
    }
    this.#setState(this.#retiring.children.size > 0 ? 'draining' : 'stopped');
    this.#stopped = Promise.all([...this.#retiring.children].map((child) => child.exited)).then(() => this.#setState('stopped'));
    return this.#stopped;
  }

  /** Immediate stop (second SIGINT): no draining. */
  kill(): void {
    this.#wantUp = false;
    this.#clearTimer();
    if (this.#ownsSocket()) this.#socket?.close();
    this.#socket = undefined;
    for (const child of [this.#current, ...this.#retiring.children]) child?.kill('SIGKILL');
  }
}
