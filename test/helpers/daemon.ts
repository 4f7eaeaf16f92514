/**
 * Runs the real daemon (dist/src/cli.js) on a temporary configuration, reads its log lines, and
 * makes sure it and its children are gone when the test ends — killed by PID, never by name.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { configDir } from './config-dir.js';
import { slots } from './slots.js';
import { CLI } from './paths.js';
import { alive, waitFor } from './wait-for.js';

export interface Daemon {
  readonly dir: string;
  readonly process: ChildProcess;
  readonly pid: number;
  /** Every stdout line so far. */
  readonly lines: string[];
  readonly stderr: () => string;
  /** Resolves with the first line (from `from` on) matching `pattern`. */
  waitForLine(pattern: RegExp, timeoutMs?: number, from?: number): Promise<string>;
  /** The port a listener bound (from its "listener NAME up" line). */
  port(listener: string, timeoutMs?: number): Promise<number>;
  /** PID of the listener's current child (from its latest "up" line). */
  childPid(listener: string): Promise<number>;
  /** Resolves with the exit code (or signal) once the daemon has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Daemons of this test process. If it ends without running the teardowns, they must not outlive
 * it; their children follow them by themselves. It may end by exiting, or by a signal: ava ends a
 * test file that timed out with SIGTERM (Ctrl-C: SIGINT), whose default action would skip the
 * 'exit' handlers, so those two are caught here, the daemons killed, and the process ended as
 * the signal would have.
 */
const running = new Set<ChildProcess>();
function killRunning(): void {
  for (const child of running) child.kill('SIGKILL');
}
process.once('exit', killRunning);
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    killRunning();
    process.kill(process.pid, signal);
  });
}

/**
 * At most three tests of a test file run daemons at once (each is a supervisor and children): more
 * starve each other on a small machine past their deadlines. A test holds one slot however many
 * daemons it starts, until it ends.
 */
const daemonSlots = slots(3);
const holdingSlot = new WeakSet<ExecutionContext>();

export const MAIN_FILE = 'logging:\n  stdout:\n    enabled: true\n';

export async function startDaemon(
  t: ExecutionContext,
  files: Record<string, string>,
  args: string[] = [],
  env: Record<string, string> = {},
  /** The program to run: this checkout's by default, an installed copy's for the packaging test. */
  cli = CLI,
): Promise<Daemon> {
  if (!holdingSlot.has(t)) {
    holdingSlot.add(t);
    await daemonSlots(t);
  }
  const dir = configDir(t, { 'packetpony.yaml': MAIN_FILE, ...files });
  const child = spawn(process.execPath, [cli, '--config', join(dir, 'packetpony.yaml'), ...args], {
    cwd: dir,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  let stderr = '';
  let partial = '';
  const childPids = new Set<number>();
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop()!;
    for (const line of parts) {
      lines.push(line);
      const pid = /listener \S+ up .*pid=(\d+)/.exec(line)?.[1];
      if (pid) childPids.add(Number(pid));
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
  });
  running.add(child);
  void exited.then(() => running.delete(child));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    // The children exit by themselves when the supervisor goes; make sure of it.
    for (const pid of childPids) {
      try {
        await waitFor(() => !alive(pid), `child ${pid} to exit`, 3000);
      } catch {
        process.kill(pid, 'SIGKILL');
      }
    }
  });

  const waitForLine = (pattern: RegExp, timeoutMs = 30_000, from = 0): Promise<string> =>
    waitFor(() => {
      if (child.exitCode !== null && !lines.slice(from).some((l) => pattern.test(l))) {
        throw new Error(`daemon exited (${child.exitCode}) before printing ${pattern}; stderr: ${stderr}\nstdout:\n${lines.join('\n')}`);
      }
      return lines.slice(from).find((l) => pattern.test(l));
    }, `a line matching ${pattern}; so far:\n${lines.join('\n')}\nstderr: ${stderr}`, timeoutMs);

  return {
    dir,
    process: child,
    pid: child.pid!,
    lines,
    stderr: () => stderr,
    waitForLine,
    exited,
    async port(listener, timeoutMs) {
      const line = await waitForLine(new RegExp(`listener ${listener} up `), timeoutMs);
      return Number(/address=\S*:(\d+)/.exec(line)![1]);
    },
    async childPid(listener) {
      await waitForLine(new RegExp(`listener ${listener} up `));
      const ups = lines.filter((l) => l.includes(`listener ${listener} up `));
      return Number(/pid=(\d+)/.exec(ups[ups.length - 1]!)![1]);
    },
  };
}
