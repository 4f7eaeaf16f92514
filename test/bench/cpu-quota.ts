/**
 * A CPU quota for a proxy's process tree (`--proxy-cpu`): a cgroup of its own whose CFS quota is
 * so many CPUs, every process started into it (and its children: PacketPony's workers, nginx's)
 * sharing that budget. On a machine of two cores where the load shares the proxies' cores, a proxy
 * with a second worker finds no idle CPU to use, for HAProxy and nginx as for us; with every proxy
 * held to a quota per worker or thread, the load side always has room and what a second worker
 * gives is the proxy's own scaling. cgroup v2 (cpu.max) where its cpu controller is enabled at the
 * root, else v1 (cpu.cfs_quota_us); needs root.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const PERIOD_US = 100_000;

export interface CpuGroup {
  /** The folder whose cgroup.procs takes a PID. */
  readonly path: string;
  readonly cpus: number;
  /** Removes the group; its processes must have exited. */
  remove(): void;
}

/** Where groups go, or the reason there is none. */
function root(): { dir: string; v2: boolean } | string {
  const v2 = '/sys/fs/cgroup';
  try {
    if (readFileSync(join(v2, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('cpu')) return { dir: v2, v2: true };
  } catch {
    // not v2 at the root
  }
  const v1 = '/sys/fs/cgroup/cpu';
  if (existsSync(join(v1, 'cpu.cfs_quota_us'))) return { dir: v1, v2: false };
  return 'no cgroup cpu controller (v2 cpu.max or v1 cpu.cfs_quota_us) found';
}

/** Why --proxy-cpu cannot work here, or null. */
export function cpuQuotaUnavailable(): string | null {
  const where = root();
  return typeof where === 'string' ? where : null;
}

export function cpuGroup(name: string, cpus: number): CpuGroup {
  const where = root();
  if (typeof where === 'string') throw new Error(where);
  const path = join(where.dir, `packetpony-bench-${name}`);
  mkdirSync(path, { recursive: true });
  const quota = Math.max(1000, Math.round(cpus * PERIOD_US));
  if (where.v2) {
    writeFileSync(join(path, 'cpu.max'), `${quota} ${PERIOD_US}`);
  } else {
    writeFileSync(join(path, 'cpu.cfs_period_us'), String(PERIOD_US));
    writeFileSync(join(path, 'cpu.cfs_quota_us'), String(quota));
  }
  return {
    path,
    cpus,
    remove() {
      // A killed descendant may not have been reaped yet (EBUSY): a second at most.
      for (let i = 0; i < 50; i++) {
        try {
          rmdirSync(path);
          return;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EBUSY') return;
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
        }
      }
    },
  };
}
