/**
 * A listener as the supervisor runs it: `workers` child processes (listener-child.ts, one each)
 * serving one address. With one worker this is the ListenerChild alone, binding its own socket, as
 * it always was. With several:
 *
 * - Sockets: one per worker in one SO_REUSEPORT group, bound, listened and kept by the supervisor
 *   (socket-owner.ts, bindWorkerSockets), so a worker's crash or replacement never closes its
 *   socket and its clients wait in the backlog instead of being refused.
 * - Spread: the kernel picks the socket of each new connection or datagram by the client's source
 *   address (a reuseport BPF program: src/native/reuseport.c). Chosen over one shared socket that
 *   every worker accepts from: that spreads by whoever wakes first (all of them, for each
 *   connection: a thundering herd, and the busiest worker tends to win again), and over a
 *   supervisor that passes connections on (a message per connection). Steering by address gives
 *   no herd, an even spread over many addresses, and above all keeps every per-address limit
 *   exact with no state shared between processes: all of an address's connections, attempts,
 *   bytes and UDP sessions meet in one worker's limiter. The cost: one address never uses more
 *   than one worker (a single heavy client, or every client behind one NAT, stays on one core).
 * - max_total_connections: the listener's total in one page of shared memory that every worker
 *   counts on (src/native/connection-total.ts), exact across workers; the supervisor takes a
 *   gone worker's connections off it.
 * - Reload: every worker's successor is prepared first (none serves yet); only when all are, all
 *   old workers hand over and the new ones begin, so a failure leaves the old group whole. When
 *   the number of workers (or the address) changes, addresses change workers: each new worker
 *   starts from every old worker's limiter state, and the slots of connections the old workers
 *   still finish are freed in every new one. Growing adds sockets at the group's end and steers
 *   over them once their workers serve; shrinking steers away from the last sockets first, lets
 *   their old workers take what waits in their backlogs, and only then closes them.
 */
import os from 'node:os';
import type { ListenerConfig } from '../config/types.js';
import { mergeSnapshots, type LimiterSnapshot, type ReleaseMessage } from '../ipc/protocol.js';
import { ConnectionTotal, connectionTotalSlots, connectionTotalSupported } from '../native/connection-total.js';
import { probeReuseportSteering } from '../platform/index.js';
import type { Logger } from '../telemetry/logger.js';
import { ListenerChild, sameSocket, type ListenerChildHooks, type ListenerState, type Replacement, type ReplaceResult, type TotalSlots, type WorkerSeat } from './listener-child.js';
import { Backoff } from './restart-policy.js';
import { bindWorkerSockets, steerWorkers, waitingOn, type BoundSocket } from './socket-owner.js';

/** How long a shrinking group waits for the backlog of a socket it is about to close. */
const DRAIN_BACKLOG_MS = 2_000;

/** The number of workers `workers:` asks for: 'auto' is the CPUs this process may run on. */
export function resolveWorkers(workers: number | 'auto'): number {
  return workers === 'auto' ? Math.max(1, os.availableParallelism()) : workers;
}

/** Whether several workers can run here (the addon's steering and shared total). */
export function workersSupported(): boolean {
  return probeReuseportSteering().usable && connectionTotalSupported();
}

/** Slots on a connection total's page, handed to the processes that count on it. */
class TotalPage implements TotalSlots {
  readonly #page: ConnectionTotal;
  readonly #free: number[];

  constructor() {
    this.#page = ConnectionTotal.create();
    this.#free = Array.from({ length: connectionTotalSlots() }, (_, i) => connectionTotalSlots() - 1 - i);
  }

  get fd(): number {
    return this.#page.fd;
  }

  take(): number {
    return this.#free.pop() ?? -1;
  }

  give(slot: number): void {
    this.#page.reclaim(slot);
    this.#free.push(slot);
  }

  charge(slot: number): void {
    this.#page.acquire(slot, 0);
  }

  discharge(slot: number): void {
    this.#page.release(slot);
  }
}

const STATE_ORDER: readonly ListenerState[] = ['binding', 'backoff', 'starting', 'draining', 'ready', 'stopped'];

export class ListenerGroup {
  #config: ListenerConfig;
  readonly #logger: Logger;
  /** The workers' hooks: reports and exits go straight up, state changes through #updateState. */
  readonly #hooks: ListenerChildHooks;
  readonly #outerStateChanged: ListenerChildHooks['stateChanged'];
  readonly #entry: string | undefined;
  #workers: ListenerChild[] = [];
  /** Workers dropped by a shrinking reload, finishing their connections. */
  readonly #leaving = new Set<ListenerChild>();
  /** With several workers: the group's sockets in join order, and the connection total. */
  #sockets: BoundSocket[] = [];
  #total: TotalPage | null = null;
  #wantUp = false;
  #bindTimer: NodeJS.Timeout | undefined;
  readonly #bindBackoff = new Backoff();
  #lastBindError = '';
  #state: ListenerState = 'stopped';
  /** Set by a reload that moved addresses between workers: freed slots go to every worker. */
  #broadcastReleases = false;
  #replacing: Promise<unknown> = Promise.resolve();
  #warnedUnsupported = false;

  constructor(config: ListenerConfig, logger: Logger, hooks: ListenerChildHooks, options: { childEntry?: string } = {}) {
    this.#config = config;
    this.#logger = logger;
    this.#entry = options.childEntry;
    this.#hooks = {
      report: (name, report, pid) => hooks.report(name, report, pid),
      childGone: (name, pid) => hooks.childGone(name, pid),
      stateChanged: () => this.#updateState(),
      childRestarting: (name, worker) => hooks.childRestarting?.(name, worker),
    };
    this.#outerStateChanged = hooks.stateChanged;
  }

  get config(): ListenerConfig {
    return this.#config;
  }

  get name(): string {
    return this.#config.name;
  }

  /** The least ready of the workers' states: the listener serves all its clients only when every worker does. */
  get state(): ListenerState {
    return this.#state;
  }

  /** PID of the first worker serving now. */
  get pid(): number | undefined {
    return this.#workers[0]?.pid;
  }

  /** PIDs of every child of this listener, serving or finishing connections. */
  get pids(): number[] {
    return [...this.#workers, ...this.#leaving].flatMap((w) => w.pids);
  }

  /**
   * The same by worker number (1-based), every worker of the group present even while it has no
   * child (restarting); a worker a shrinking reload dropped stays until its children are gone.
   */
  get workerPids(): Map<number, number[]> {
    const byWorker = new Map<number, number[]>();
    for (const worker of [...this.#workers, ...this.#leaving]) {
      const number = worker.place.index + 1;
      byWorker.set(number, [...(byWorker.get(number) ?? []), ...worker.pids]);
    }
    return byWorker;
  }

  get boundAddress(): string | undefined {
    return this.#workers[0]?.boundAddress;
  }

  get restarts(): number {
    return this.#workers.reduce((sum, w) => sum + w.restarts, 0);
  }

  start(): void {
    if (this.#wantUp) return;
    this.#wantUp = true;
    this.#startWorkers();
  }

  #updateState(): void {
    const states = this.#workers.map((w) => w.state);
    let state: ListenerState = this.#workers.length === 0 ? (this.#wantUp ? 'binding' : 'stopped') : 'stopped';
    for (const candidate of STATE_ORDER) {
      if (states.includes(candidate)) {
        state = candidate;
        break;
      }
    }
    if (state === this.#state) return;
    this.#state = state;
    this.#outerStateChanged?.(this.name, state);
  }

  /** How many workers this configuration gets here; says once why when it asks for more than can run. */
  #count(config: ListenerConfig): number {
    const wanted = resolveWorkers(config.workers);
    if (wanted === 1 || workersSupported()) return wanted;
    if (!this.#warnedUnsupported) {
      this.#logger.warn(`listener ${config.name}: workers: ${String(config.workers)} needs the native addon (${probeReuseportSteering().reason}); running 1 worker`, { listener: config.name });
      this.#warnedUnsupported = true;
    }
    return 1;
  }

  #child(config: ListenerConfig, seat: WorkerSeat | undefined): ListenerChild {
    return new ListenerChild(config, this.#logger, this.#hooks, {
      childEntry: this.#entry,
      seat,
      release: (message, from) => this.#release(message, from),
    });
  }

  #seats(count: number, sockets: readonly BoundSocket[]): WorkerSeat[] {
    if (count > 1) this.#total ??= new TotalPage();
    return sockets.map((socket, index) => ({ place: { index, count }, socket, total: count > 1 ? this.#total : null }));
  }

  #startWorkers(): void {
    clearTimeout(this.#bindTimer);
    if (!this.#wantUp) return;
    const count = this.#count(this.#config);
    if (count === 1) {
      const only = this.#child(this.#config, undefined);
      this.#workers = [only];
      only.start();
      this.#updateState();
      return;
    }
    const bound = bindWorkerSockets(this.#config, count);
    if (!bound.ok) {
      if (bound.code !== this.#lastBindError) {
        this.#logger.error(`listener ${this.name}: ${bound.message}`, { listener: this.name, code: bound.code });
        this.#lastBindError = bound.code;
      }
      this.#updateState();
      this.#bindTimer = setTimeout(() => this.#startWorkers(), this.#bindBackoff.failed());
      return;
    }
    this.#lastBindError = '';
    this.#bindBackoff.up();
    this.#sockets = bound.sockets;
    steerWorkers(this.#sockets, count);
    this.#workers = this.#seats(count, this.#sockets).map((seat) => this.#child(this.#config, seat));
    for (const worker of this.#workers) worker.start();
    this.#updateState();
  }

  /** A predecessor's closed connections: their slots are freed where the address is served now. */
  #release(message: ReleaseMessage, from: ListenerChild): void {
    if (!this.#broadcastReleases) {
      from.releaseInCurrent(message);
      return;
    }
    if (message.all) {
      // Only once no worker at all still finishes inherited connections.
      if ([...this.#workers, ...this.#leaving].some((w) => w.inheriting)) return;
      this.#broadcastReleases = false;
    }
    for (const worker of this.#workers) worker.releaseInCurrent(message);
  }

  replace(config: ListenerConfig, deadlineMs: number): Promise<ReplaceResult> {
    const run = this.#replacing.then(() => this.#replace(config, deadlineMs));
    this.#replacing = run.catch(() => undefined);
    return run;
  }

  async #replace(config: ListenerConfig, deadlineMs: number): Promise<ReplaceResult> {
    const before = this.#workers.length;
    const after = this.#count(config);
    const moved = !sameSocket(this.#config, config);
    if (!this.#wantUp || this.#workers.length === 0) {
      // Not started, or still binding: the next attempt takes the new configuration.
      this.#config = config;
      return { ok: true };
    }
    if (before === 1 && !this.#workers[0]!.seated && (after === 1 || !this.#workers[0]!.ownSocket() || this.#workers[0]!.state !== 'ready')) {
      if (after > 1) {
        // Nothing bound or serving to grow from: start the group anew on the new configuration.
        await this.#workers[0]!.stop(0);
        this.#config = config;
        this.#startWorkers();
        return { ok: true };
      }
      const result = await this.#workers[0]!.replace(config, deadlineMs);
      if (result.ok) this.#config = config;
      return result;
    }

    // 1. The sockets of the new group: kept where the address stays, added at the end to grow.
    let sockets: BoundSocket[];
    const added: BoundSocket[] = [];
    if (!moved && after > 1) {
      const existing = before > 1 ? this.#sockets.slice(0, Math.min(before, after)) : [this.#workers[0]!.ownSocket()!];
      const bound = bindWorkerSockets(config, after, existing);
      if (!bound.ok) return { ok: false, message: `${bound.message}; the running workers keep serving` };
      sockets = bound.sockets;
      added.push(...sockets.slice(existing.length));
    } else if (!moved) {
      sockets = [this.#sockets[0]!];
    } else if (after > 1) {
      const bound = bindWorkerSockets(config, after);
      if (!bound.ok) return { ok: false, message: `${bound.message}; the previous address keeps serving` };
      sockets = bound.sockets;
      added.push(...sockets);
      steerWorkers(sockets, after);
    } else {
      sockets = [];
    }

    // 2. Every successor prepared, none serving yet.
    const seats: Array<WorkerSeat | undefined> = after > 1 || !moved ? this.#seats(after, sockets) : [undefined];
    const workers = seats.map((seat, i) => (i < before ? this.#workers[i]! : this.#child(config, seat)));
    const prepared = await Promise.all(
      workers.map((worker, i) => (i < before ? worker.prepareReplacement(config, seats[i]) : worker.prepareFirst(config, seats[i]!))),
    );
    const failed = prepared.find((p): p is ReplaceResult => !('child' in p));
    if (failed) {
      for (const p of prepared) if ('child' in p) workers[prepared.indexOf(p)]!.abandon(p);
      for (const socket of added) socket.close();
      return { ok: false, message: failed.message ?? 'a new worker could not start; the running ones keep serving' };
    }
    const replacements = prepared as Replacement[];

    // 3. Shrinking: no new clients for the sockets that go; their old workers take what waits.
    const leaving = !moved && after < before ? this.#sockets.slice(after) : [];
    if (leaving.length > 0) {
      steerWorkers(this.#sockets, after);
      const deadline = Date.now() + DRAIN_BACKLOG_MS;
      while (leaving.some((s) => waitingOn(s) > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    }

    // 4. All old workers hand over at once; 5. the new ones begin.
    const snapshots: Array<LimiterSnapshot | null> = await Promise.all(
      this.#workers.map((worker, i) => (i < after ? worker.handOver(replacements[i]!, deadlineMs) : worker.stopAfterHandover(deadlineMs))),
    );
    const reshaped = moved || after !== before;
    const merged = reshaped ? mergeSnapshots(snapshots) : null;
    if (reshaped) this.#broadcastReleases = true;
    for (const worker of this.#workers.slice(after)) {
      this.#leaving.add(worker);
      void worker.stopped.then(() => this.#leaving.delete(worker));
    }
    const previousSockets = this.#sockets;
    this.#workers = workers;
    this.#config = config;
    this.#sockets = after > 1 || !moved ? sockets : [];
    const results = await Promise.all(replacements.map((r, i) => workers[i]!.commit(r, reshaped ? merged : snapshots[i] ?? null)));

    // 6. Growing: steer over every socket once all workers serve. Sockets no worker has are closed.
    if (!moved && after > before) steerWorkers(sockets, after);
    for (const socket of moved ? previousSockets : leaving) socket.close();
    this.#updateState();
    const bad = results.find((r) => !r.ok);
    return bad ?? { ok: true };
  }

  stop(deadlineMs: number): Promise<void> {
    this.#wantUp = false;
    clearTimeout(this.#bindTimer);
    const all = [...this.#workers, ...this.#leaving].map((w) => w.stop(deadlineMs));
    for (const socket of this.#sockets) socket.close();
    return Promise.all(all).then(() => this.#updateState());
  }

  kill(): void {
    this.#wantUp = false;
    clearTimeout(this.#bindTimer);
    for (const worker of [...this.#workers, ...this.#leaving]) worker.kill();
    for (const socket of this.#sockets) socket.close();
  }
}
