/**
 * One spawned child process of a listener: the fork, its IPC messages, the tail of its stderr, and
 * request/answer waits ("send pp:start, wait for pp:prepared") that give up when the child exits or
 * a deadline passes. Listener-level decisions (restarts, hand-overs) are listener-child.ts's.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isChildMessage, type ChildMessage, type SupervisorMessage } from '../ipc/protocol.js';
import { PacketPonyError } from '../errors.js';

export const CHILD_ENTRY = fileURLToPath(new URL('../child/main.js', import.meta.url));
const STDERR_LINES_KEPT = 10;

export class ChildGoneError extends PacketPonyError {
  constructor(what: string) {
    super('PP_ERR_CHILD_GONE', what);
  }
}

export interface ChildExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

type Waiter = {
  readonly type: ChildMessage['type'];
  readonly resolve: (message: ChildMessage) => void;
  readonly reject: (error: Error) => void;
};

/**
 * Node flags of every child, after the supervisor's own: gc() for the memory reclaimer
 * (src/child/memory-reclaimer.ts), and a young generation of at most 3 × 4 MiB instead of V8's
 * 3 × 16: under load V8 grows it to the maximum and keeps it, which costs memory per idle
 * connection, while 4 MiB costs no CPU per new connection and 1 MiB would (the measurements:
 * docs/performance.md, "The children's young generation").
 */
export const CHILD_NODE_FLAGS: readonly string[] = ['--expose-gc', '--max-semi-space-size=4'];

/**
 * Where a listening socket the child inherits lands in it: the first descriptor after stdin,
 * stdout, stderr and the IPC channel (fork's stdio array, in order); the listener's shared
 * connection total (several workers) comes next.
 */
export const INHERITED_SOCKET_FD = 4;
export const INHERITED_TOTAL_FD = 5;

/** What a child inherits: its socket's descriptor (when not sent as a handle), the total's page. */
export interface Inherited {
  readonly socketFd?: number;
  readonly totalFd?: number;
}

export class ChildProcessHandle {
  readonly listener: string;
  readonly process: ChildProcess;
  readonly exited: Promise<ChildExit>;
  #stderrTail: string[] = [];
  #waiters = new Set<Waiter>();
  #exit: ChildExit | undefined;

  /**
   * `inherited`: descriptors of the supervisor's that the child gets as INHERITED_SOCKET_FD and
   * INHERITED_TOTAL_FD. `title`: what `ps` shows after "packetpony: " (the listener's name, with
   * the worker's number when it has several: "web/2").
   */
  constructor(listener: string, onMessage: (child: ChildProcessHandle, message: ChildMessage) => void, entry = CHILD_ENTRY, inherited: Inherited = {}, title = listener) {
    this.listener = listener;
    const stdio: Array<'ignore' | 'pipe' | 'ipc' | number> = ['ignore', 'ignore', 'pipe', 'ipc'];
    if (inherited.socketFd !== undefined || inherited.totalFd !== undefined) stdio.push(inherited.socketFd ?? 'ignore');
    if (inherited.totalFd !== undefined) stdio.push(inherited.totalFd);
    this.process = fork(entry, ['--listener', title], {
      stdio,
      serialization: 'json',
      execArgv: [...process.execArgv, ...CHILD_NODE_FLAGS],
    });
    this.process.stderr!.setEncoding('utf8');
    this.process.stderr!.on('data', (chunk: string) => this.#keepStderr(chunk));
    this.process.on('message', (message: unknown) => {
      if (!isChildMessage(message)) return;
      for (const waiter of this.#waiters) {
        if (waiter.type === message.type) {
          this.#waiters.delete(waiter);
          waiter.resolve(message);
        }
      }
      onMessage(this, message);
    });
    this.exited = new Promise((resolve) => {
      this.process.on('exit', (code, signal) => {
        this.#exit = { code, signal };
        for (const waiter of this.#waiters) waiter.reject(new ChildGoneError(`the child ${this.#describeExit()}`));
        this.#waiters.clear();
        resolve(this.#exit);
      });
    });
    // A failed spawn also ends with 'exit'; the error itself only needs to be kept from throwing.
    this.process.on('error', () => {});
  }

  get pid(): number | undefined {
    return this.process.pid;
  }

  get alive(): boolean {
    return this.#exit === undefined;
  }

  get stderrTail(): readonly string[] {
    return this.#stderrTail;
  }

  #describeExit(): string {
    const exit = this.#exit;
    if (!exit) return 'is running';
    return exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
  }

  describeExit(): string {
    return this.#describeExit();
  }

  #keepStderr(chunk: string): void {
    for (const line of chunk.split('\n')) {
      if (line.trim() === '') continue;
      this.#stderrTail.push(line.length > 500 ? `${line.slice(0, 500)}…` : line);
      if (this.#stderrTail.length > STDERR_LINES_KEPT) this.#stderrTail.shift();
    }
  }

  /** Sends a message (with a socket handle for pp:start); resolves once it is written. */
  send(message: SupervisorMessage, handle?: object): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!this.process.connected) {
        reject(new ChildGoneError('the child is not connected'));
        return;
      }
      this.process.send(message, handle as never, (error) => (error ? reject(error) : resolve()));
    });
  }

  /** The next message of `type`; rejects if the child exits first or `timeoutMs` passes. */
  waitFor<T extends ChildMessage['type']>(type: T, timeoutMs: number): Promise<Extract<ChildMessage, { type: T }>> {
    if (!this.alive) return Promise.reject(new ChildGoneError(`the child ${this.#describeExit()}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new PacketPonyError('PP_ERR_CHILD_TIMEOUT', `the child did not answer ${type} within ${timeoutMs / 1000}s`));
      }, timeoutMs);
      const waiter: Waiter = {
        type,
        resolve: (message) => {
          clearTimeout(timer);
          resolve(message as Extract<ChildMessage, { type: T }>);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.#waiters.add(waiter);
    });
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.alive) this.process.kill(signal);
  }
}
