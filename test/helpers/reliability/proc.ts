/**
 * What the kernel says about a process, read from /proc: resident memory, descriptors, CPU time.
 * Used to state bounds (the child's RSS, its open descriptors) as figures, not adjectives.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** Resident set size in bytes (VmRSS). */
export function rss(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmRSS for ${pid}`);
  return Number(match[1]) * 1024;
}

/** Open file descriptors. */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Open descriptors by kind: socket, pipe, anon_inode (epoll, eventfd…), file. */
export function fdKinds(pid: number): Record<string, number> {
  const kinds: Record<string, number> = {};
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed while we looked
    }
    const kind = /^(\w+):/.exec(target)?.[1] ?? 'file';
    kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  return kinds;
}

/** Sockets only. */
export function socketCount(pid: number): number {
  return fdKinds(pid).socket ?? 0;
}

/** User + system CPU seconds the process has used (clock ticks are 1/100 s on Linux). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at ") ".
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** The soft and hard RLIMIT_NOFILE of a process, as /proc writes them ('unlimited' or a number). */
function openFilesLimits(pid: number): { soft: string | undefined; hard: string | undefined } {
  const fields = readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'))?.split(/\s+/);
  return { soft: fields?.[3], hard: fields?.[4] };
}

/** The soft RLIMIT_NOFILE of a process. */
export function maxOpenFiles(pid: number): number {
  return Number(openFilesLimits(pid).soft);
}

/**
 * Raises this process's soft RLIMIT_NOFILE to at least `wanted` (within the hard limit) with
 * prlimit(1), and returns the soft limit it ends with.
 */
export function raiseOwnOpenFilesLimit(wanted: number): number {
  const current = maxOpenFiles(process.pid);
  if (current >= wanted) return current;
  const hardField = openFilesLimits(process.pid).hard;
  const hard = hardField === 'unlimited' ? Infinity : Number(hardField);
  const target = Math.min(wanted, hard);
  try {
    execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${target}:${hardField}`]);
  } catch {
    // prlimit missing or refused: the caller reports the limit it got
  }
  return maxOpenFiles(process.pid);
}

/** Samples `read()` every `everyMs` until stopped; keeps the maximum and every sample. */
export function sampler(read: () => number, everyMs = 100): { readonly max: number; readonly samples: number[]; stop(): number } {
  const samples: number[] = [];
  let max = 0;
  const take = (): void => {
    try {
      const value = read();
      samples.push(value);
      if (value > max) max = value;
    } catch {
      // the process is gone: nothing to sample
    }
  };
  take();
  // Unref'd: a test that fails before stop() must not keep its worker alive.
  const timer = setInterval(take, everyMs).unref();
  return {
    get max() {
      return max;
    },
    samples,
    stop() {
      clearInterval(timer);
      take();
      return max;
    },
  };
}

/** CPU seconds of a process plus those of its children it has reaped (cutime, cstime). */
export function cpuSecondsWithChildren(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / 100;
}

/** CPU seconds of the process itself and of its reaped children, apart. */
export function cpuSplit(pid: number): { self: number; children: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { self: (Number(fields[11]) + Number(fields[12])) / 100, children: (Number(fields[13]) + Number(fields[14])) / 100 };
}
