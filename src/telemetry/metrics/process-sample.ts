/**
 * Resident memory, CPU time and open descriptors of another process, read from /proc/<pid>/ (Linux)
 * at scrape time. The children do not report these themselves: a child that is stuck or dying is
 * exactly the one whose figures matter.
 */
import { readdir, readFile } from 'node:fs/promises';

/**
 * Clock ticks per second of the CPU times in /proc/<pid>/stat (sysconf(_SC_CLK_TCK)). Node cannot
 * ask sysconf; it is 100 on every Linux architecture node runs on.
 */
const CLOCK_TICKS_PER_SECOND = 100;

export interface ProcessSample {
  readonly residentBytes: number;
  readonly cpuSeconds: number;
  readonly openFds: number;
}

/** Undefined when the process is gone (or /proc is not there). */
export async function sampleProcess(pid: number): Promise<ProcessSample | undefined> {
  try {
    const [stat, status, fds] = await Promise.all([
      readFile(`/proc/${pid}/stat`, 'latin1'),
      readFile(`/proc/${pid}/status`, 'latin1'),
      readdir(`/proc/${pid}/fd`),
    ]);
    // The command name (2nd field) is in parentheses and may hold spaces: count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15)
    const rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
    return { residentBytes: rssKb * 1024, cpuSeconds: ticks / CLOCK_TICKS_PER_SECOND, openFds: fds.length };
  } catch {
    return undefined;
  }
}
