/**
 * Every process the benchmark starts goes through here: pinned to a core with taskset (which execs
 * the program, so the PID we hold is the program's), remembered, and stopped by that PID — never by
 * name. On exit, Ctrl-C or a crash, whatever is still running is killed.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

export interface Started {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** Everything the process printed on stdout so far (when piped). */
  readonly out: () => string;
  readonly err: () => string;
  readonly exited: Promise<number | null>;
}

const running = new Set<Started>();

function killAll(): void {
  for (const p of running) {
    // Descendants too (nginx's worker, PacketPony's children): SIGKILL gives a parent no chance to
    // take them down, and they would outlive the benchmark.
    for (const pid of processTree(p.pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  running.clear();
}

process.once('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killAll();
    process.exit(130);
  });
}

/** Cores as taskset takes them: one (0) or a list ("0,1"). */
export type Cores = number | string;

export interface StartOptions {
  /** The core or cores to pin to; undefined: not pinned. */
  readonly core?: Cores;
  /** A cgroup folder (cpu-quota.ts) the process enters before it runs, its children with it. */
  readonly cgroup?: string;
  readonly cwd?: string;
  readonly env?: Record<string, string>;
  /** Keep stdout/stderr (default) or drop them. */
  readonly capture?: boolean;
  /** Gets stdout instead of it being kept (for chatty processes). */
  readonly onStdout?: (chunk: string) => void;
}

export function start(name: string, command: string, args: readonly string[], options: StartOptions = {}): Started {
  let argv = options.core === undefined ? [command, ...args] : ['taskset', '-c', String(options.core), command, ...args];
  // The shell puts itself in the group and execs the rest: the PID held is still the program's.
  if (options.cgroup !== undefined) argv = ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', options.cgroup, ...argv];
  const capture = options.capture ?? true;
  const spawnOptions: SpawnOptions = {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', capture ? 'pipe' : 'ignore', capture ? 'pipe' : 'ignore'],
  };
  const child = spawn(argv[0]!, argv.slice(1), spawnOptions);
  let out = '';
  let err = '';
  // Bounded: a chatty process must not grow the benchmark's memory; the start of the output is
  // what readiness checks look at, the end is what a failure shows.
  const keep = (text: string, add: string): string => (text.length > 1_000_000 ? text.slice(0, 500_000) + text.slice(-400_000) : text) + add;
  const onStdout = options.onStdout;
  if (onStdout !== undefined) child.stdout?.setEncoding('utf8').on('data', onStdout);
  else child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (out = keep(out, chunk)));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (err = keep(err, chunk)));
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', () => resolve(-1));
  });
  if (child.pid === undefined) throw new Error(`cannot start ${command}`);
  const started: Started = { name, child, pid: child.pid, out: () => out, err: () => err, exited };
  running.add(started);
  void exited.then(() => running.delete(started));
  return started;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
export async function stop(p: Started, graceMs = 3000): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  try {
    process.kill(p.pid, 'SIGTERM');
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }, graceMs);
  await p.exited;
  clearTimeout(timer);
}

/** Runs a program to completion (bounded by `timeoutMs`), returning its output. */
export async function run(
  name: string,
  command: string,
  args: readonly string[],
  options: StartOptions & { readonly timeoutMs: number },
): Promise<{ code: number | null; out: string; err: string }> {
  const p = start(name, command, args, options);
  const timer = setTimeout(() => {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }, options.timeoutMs);
  const code = await p.exited;
  clearTimeout(timer);
  // Let the pipes drain.
  await new Promise((resolve) => setImmediate(resolve));
  return { code, out: p.out(), err: p.err() };
}

/** The PID and all its descendants (from /proc/PID/task/TID/children). */
export function processTree(pid: number): number[] {
  const out: number[] = [];
  const visit = (p: number): void => {
    out.push(p);
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      return;
    }
    for (const tid of tasks) {
      let children = '';
      try {
        children = readFileSync(`/proc/${p}/task/${tid}/children`, 'utf8');
      } catch {
        continue;
      }
      for (const c of children.trim().split(/\s+/)) if (c !== '') visit(Number(c));
    }
  };
  visit(pid);
  return out;
}

/** Resident set size in bytes of the processes (0 for any that is gone). */
export function rssBytes(pids: readonly number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
      if (kb !== undefined) total += Number(kb) * 1024;
    } catch {
      // exited
    }
  }
  return total;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it returns a value (not undefined), or throws after `timeoutMs`. */
export async function waitFor<T>(check: () => T | undefined | Promise<T | undefined>, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/**
 * CPU time the processes have run, in ns, summed over all their threads (/proc/PID/task/TID/schedstat,
 * nanosecond resolution). Exited processes count 0, so measure a process tree that lives through
 * the interval.
 */
export function cpuNs(pids: readonly number[]): number {
  let total = 0;
  for (const pid of pids) {
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tasks) {
      try {
        total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // thread gone
      }
    }
  }
  return total;
}

/** Busy and total time of a core (or the sum over a list of them) so far, in USER_HZ ticks (/proc/stat). */
export function coreTicks(cores: Cores): { busy: number; total: number } {
  try {
    const lines = readFileSync('/proc/stat', 'utf8').split('\n');
    let busy = 0;
    let total = 0;
    for (const core of String(cores).split(',')) {
      const line = lines.find((l) => l.startsWith(`cpu${core} `));
      if (line === undefined) return { busy: NaN, total: NaN };
      const f = line.trim().split(/\s+/).slice(1).map(Number);
      const all = f.reduce((a, b) => a + b, 0);
      busy += all - (f[3] ?? 0) - (f[4] ?? 0);
      total += all;
    }
    return { busy, total };
  } catch {
    return { busy: NaN, total: NaN };
  }
}

/**
 * CPU time the processes have run in user space and in the kernel, in clock ticks (/proc/PID/stat
 * utime and stime, threads included; 10 ms each, so measure over seconds). Exited processes count 0.
 */
export function userSystemTicks(pids: readonly number[]): { user: number; system: number } {
  let user = 0;
  let system = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // The command name (field 2) may hold spaces and parentheses: count fields after its end.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      user += Number(fields[11]);
      system += Number(fields[12]);
    } catch {
      // exited
    }
  }
  return { user, system };
}

/**
 * CPU time of a process tree that forks per connection (socat): what its live processes have run
 * (cpuNs) plus what its root's reaped children ran (cutime + cstime in /proc/PID/stat, in
 * USER_HZ ticks: 10 ms). The tree is read anew at each call, so the difference of two calls counts
 * the children that came and went between them; a child that was already running at the first
 * call and is reaped before the second is counted whole.
 */
export function forkingTreeCpuNs(root: number): number {
  let reaped = 0;
  try {
    // After the command name (which may hold spaces and parentheses): state is field 3, so cutime
    // and cstime (fields 16 and 17) are at 13 and 14 here.
    const fields = readFileSync(`/proc/${root}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ');
    reaped = (Number(fields[13]) + Number(fields[14])) * 1e7;
  } catch {
    // gone
  }
  return cpuNs(processTree(root)) + reaped;
}
