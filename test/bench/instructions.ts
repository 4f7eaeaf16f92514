/**
 * `npm run bench:instructions [-- options]`: what PacketPony's features cost, counted instead of
 * timed. PacketPony runs under valgrind's callgrind (supervisor and child alike), the benchmark's
 * own rows (rows.ts: iperf3, wrk, the C UDP client, with their backends) drive it, and the
 * instructions its processes executed are read with callgrind_control (zeroed before a run, dumped
 * after) and divided by the operations the load tool reports. The counts hardly move from one run
 * to the next whatever the machine's speed, where timed figures on this machine drift by ±25 %
 * between cells of one run: they can show a cost of a few per cent, or a change in the code, that
 * timing cannot.
 *
 * What the count leaves out:
 * - The kernel (callgrind sees user space only). Features off and on make the same system calls
 *   on the data path, so the kernel's share is the same for both, and the ratio of user-space
 *   instructions is an upper bound on what features cost in CPU time. For the estimate of that
 *   cost, each row is also run natively with features off, reading the processes' user and system
 *   time (/proc/PID/stat): features adding X to the user-space instructions where user space is a
 *   share U of the CPU time add about X × U to it.
 * - Work done by the clock (the child's stats every second, the supervisor's housekeeping): it is
 *   measured first with no load and taken out of each run by its duration. Under callgrind a run
 *   moves ~50× fewer operations per second than natively, and that work would otherwise be charged
 *   ~50× over to each operation.
 * - V8's compilations: each row is run at least four times, then until a run counts within 3 % of
 *   the one before (hot functions are optimized on a background thread, counted too, after enough
 *   calls), and only then counted.
 *
 * Options:
 *   --rows a,b        tcp1-up, tcp1-down, tcp8-up, tcp8-down, http-ka, http-new (the default),
 *                     udp64, udp1000 (see DEFAULT_ROWS)
 *   --targets a,b     pp-off, pp-on (default both)
 *   --baseline DIR    also count the build whose package root is DIR (pp-off@base, pp-on@base)
 *   --repeats N       counted runs per row and target after the warm-up (default 3)
 *   --seconds S       seconds per run (default 3)
 *   --proxy-core N    core for PacketPony (default 0); --load-core N for the load (default 1)
 *   --no-install      do not apt-get install missing tools (valgrind, iperf3, wrk)
 *   --out FILE        also write the markdown there
 *   --keep            keep callgrind's files (.bench/callgrind-PID/) for callgrind_annotate
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startBackend } from './backends.js';
import { userSystemTicks, waitFor } from './procs.js';
import { median } from './report.js';
import { ROWS, type BackendKind, type Row, type RunContext, type Sample } from './rows.js';
import { packetpony, type Running, type Target, type TargetContext } from './targets.js';
import { aptInstall, findTools, which } from './tools.js';

// ---- counting ---------------------------------------------------------------------------------

function log(line: string): void {
  process.stderr.write(`instructions: ${line}\n`);
}

/** Total instructions of each PID's latest dump (callgrind names them PREFIX.PID.N). */
function dumpCounts(dir: string, pids: readonly number[]): Map<number, number> {
  const counts = new Map<number, number>();
  for (const pid of pids) {
    let best = -1;
    for (const name of readdirSync(dir)) {
      const m = new RegExp(`^cg\\.${pid}\\.(\\d+)$`).exec(name);
      if (m !== null && Number(m[1]) > best) best = Number(m[1]);
    }
    if (best < 0) throw new Error(`no callgrind dump for PID ${pid}`);
    const text = readFileSync(join(dir, `cg.${pid}.${best}`), 'utf8');
    const total = /^summary:\s+(\d+)/m.exec(text) ?? /^totals:\s+(\d+)/m.exec(text);
    if (total === null) throw new Error(`no summary line in cg.${pid}.${best}`);
    counts.set(pid, Number(total[1]));
  }
  return counts;
}

function callgrindControl(flag: '-z' | '-d', pid: number): void {
  const r = spawnSync('callgrind_control', [flag, String(pid)], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0 || !/OK/.test(r.stdout)) throw new Error(`callgrind_control ${flag} ${pid}: ${r.stdout}${r.stderr}`);
}

/**
 * Open sockets of a process (they come and go with the connections). Sockets only: valgrind opens
 * and keeps files of its own in the process.
 */
function sockets(pid: number): number {
  let n = 0;
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    // gone
  }
  return n;
}

interface Count {
  /** Instructions per operation of the supervisor and of the listener's child, per counted run. */
  readonly supervisor: number[];
  readonly child: number[];
}

/** Zeroes the processes' counters, runs `during`, dumps them: instructions and seconds taken. */
async function counted(pids: readonly number[], cgDir: string, during: () => Promise<void>): Promise<{ counts: Map<number, number>; seconds: number }> {
  for (const pid of pids) callgrindControl('-z', pid);
  const started = performance.now();
  await during();
  const seconds = (performance.now() - started) / 1000;
  for (const pid of pids) callgrindControl('-d', pid);
  return { counts: dumpCounts(cgDir, pids), seconds };
}

const IDLE_SECONDS = 5;
/** Warm-up runs: at least MIN, then until one counts within 3 % of the one before, at most MAX. */
const MIN_WARMUPS = 4;
const MAX_WARMUPS = 10;

/** Rows whose operations can be counted (not the memory row, not the reload row). */
const COUNTED_ROWS = ['tcp1-up', 'tcp1-down', 'tcp8-up', 'tcp8-down', 'http-ka', 'http-new', 'udp64', 'udp1000'];
/**
 * Counted unless --rows says otherwise: not UDP. Its datagrams are read and sent in batches whose
 * size depends on timing, so a count per datagram moves by ±50 % between runs under callgrind
 * (1.5–10 k instructions per reply seen), and a run takes ~30 s there. The main benchmark's CPU
 * time per reply, paired by round, shows what features cost on UDP (+2.7 % at the last full run).
 */
const DEFAULT_ROWS = COUNTED_ROWS.filter((id) => !id.startsWith('udp'));

/** Counts the rows that share one backend on one running PacketPony. */
async function countTarget(target: Target, rows: readonly Row[], backendPort: number, ctx: TargetContext, runCtx: RunContext, repeats: number, cgDir: string): Promise<Map<string, Count>> {
  const running: Running = await target.start(rows[0]!.proto, backendPort, ctx);
  const results = new Map<string, Count>();
  try {
    const pids = running.pids();
    const [supervisor, child] = pids;
    if (supervisor === undefined || child === undefined || pids.length !== 2) throw new Error(`expected a supervisor and one child, found PIDs ${pids.join(', ')}`);
    const idle = await counted(pids, cgDir, () => new Promise((done) => setTimeout(done, IDLE_SECONDS * 1000)));
    const perSecond = new Map(pids.map((pid) => [pid, idle.counts.get(pid)! / idle.seconds]));
    log(`${target.id}: idle ${figure(perSecond.get(child)!)} (child), ${figure(perSecond.get(supervisor)!)} (supervisor) instructions per second`);
    for (const row of rows) {
      const result: Count = { supervisor: [], child: [] };
      results.set(row.id, result);
      const measure = async (): Promise<{ supervisor: number; child: number; seconds: number }> => {
        const settled = sockets(child);
        let sample: Sample | undefined;
        const { counts, seconds } = await counted(pids, cgDir, async () => {
          sample = await row.measure(running, runCtx);
          // The child's end of the last connections (and the supervisor's log lines) belong to
          // this run: wait until its sockets are back to what they were.
          await waitFor(() => sockets(child) <= settled || undefined, `the child to close its connections (${settled} sockets before, ${sockets(child)} now)`, 120_000);
        });
        if (sample === undefined || !(sample.value > 0)) throw new Error(`${target.id} ${row.id}: the run failed (${sample?.note ?? 'no value'})`);
        const ops = row.perOp!(sample.value, runCtx.seconds);
        const perOp = (pid: number): number => Math.max(0, counts.get(pid)! - perSecond.get(pid)! * seconds) / ops;
        return { supervisor: perOp(supervisor), child: perOp(child), seconds };
      };
      // Warm-up until the count settles (two runs in a row can agree before V8 has optimized).
      let previous = Infinity;
      for (let warm = 1; warm <= MAX_WARMUPS; warm++) {
        const w = await measure();
        const total = w.supervisor + w.child;
        log(`${target.id} ${row.id}: warm-up ${warm}: ${figure(total)} instructions per ${row.opName}`);
        if (warm >= MIN_WARMUPS && Math.abs(total / previous - 1) < 0.03) break;
        previous = total;
      }
      for (let i = 0; i < repeats; i++) {
        const m = await measure();
        result.supervisor.push(m.supervisor);
        result.child.push(m.child);
        log(`${target.id} ${row.id}: child ${figure(m.child)}, supervisor ${figure(m.supervisor)} instructions per ${row.opName} (${m.seconds.toFixed(1)} s)`);
      }
    }
  } finally {
    await running.stop();
  }
  return results;
}

/**
 * The user-space share of PacketPony's CPU time natively (no valgrind), per row: what turns a
 * ratio of user-space instructions into a cost in CPU time. Features off and on make the same
 * system calls, so if features add X to the user-space instructions of an operation and user space
 * is a share U of its CPU time, they add about X × U to that time.
 */
async function userShare(target: Target, rows: readonly Row[], backendPort: number, ctx: TargetContext, runCtx: RunContext, repeats: number): Promise<Map<string, number>> {
  const running = await target.start(rows[0]!.proto, backendPort, ctx);
  const shares = new Map<string, number>();
  try {
    for (const row of rows) {
      await row.measure(running, runCtx); // warm-up
      let user = 0;
      let system = 0;
      for (let i = 0; i < repeats; i++) {
        const before = userSystemTicks(running.pids());
        await row.measure(running, runCtx);
        const after = userSystemTicks(running.pids());
        user += after.user - before.user;
        system += after.system - before.system;
      }
      shares.set(row.id, user / (user + system));
      log(`${target.id} ${row.id}: natively ${(100 * user / (user + system)).toFixed(0)} % of the CPU time in user space (${user + system} ticks)`);
    }
  } finally {
    await running.stop();
  }
  return shares;
}

// ---- report -----------------------------------------------------------------------------------

function figure(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} k` : n.toFixed(0);
}

function totals(c: Count): number[] {
  return c.child.map((v, i) => v + c.supervisor[i]!);
}

function cell(c: Count | undefined): string {
  if (c === undefined) return '–';
  const t = totals(c);
  const spread = (Math.max(...t) - Math.min(...t)) / median(t);
  return `${figure(median(t))} (child ${figure(median(c.child))}, ±${(spread * 50).toFixed(1)} %)`;
}

/** What features add to the user-space instructions of an operation, as a fraction. */
function added(on: Count | undefined, off: Count | undefined): number {
  return on === undefined || off === undefined ? NaN : median(totals(on)) / median(totals(off)) - 1;
}

function percent(fraction: number): string {
  return Number.isNaN(fraction) ? '–' : `${fraction >= 0 ? '+' : ''}${(fraction * 100).toFixed(1)} %`;
}

// ---- main -------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const option = (name: string): string | undefined => {
    const i = args.indexOf(name);
    return i < 0 ? undefined : args[i + 1];
  };
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
  const rowIds = option('--rows')?.split(',') ?? DEFAULT_ROWS;
  for (const id of rowIds) if (!COUNTED_ROWS.includes(id)) throw new Error(`unknown row ${id} (rows: ${COUNTED_ROWS.join(', ')})`);
  const wanted = option('--targets')?.split(',') ?? ['pp-off', 'pp-on'];
  const baseline = option('--baseline');
  const repeats = Number(option('--repeats') ?? 3);
  const seconds = Number(option('--seconds') ?? 3);
  const proxyCore = Number(option('--proxy-core') ?? 0);
  const loadCore = Number(option('--load-core') ?? 1);
  const install = !args.includes('--no-install');
  const out = option('--out');
  if (install && which('callgrind_control') === null) aptInstall(['valgrind'], []);
  if (which('valgrind') === null || which('callgrind_control') === null) throw new Error('valgrind is not installed (Debian: apt-get install valgrind)');
  try {
    execFileSync('taskset', ['-pc', String(loadCore), String(process.pid)], { stdio: 'ignore' });
  } catch {
    log('taskset failed: nothing is pinned');
  }
  const work = join(root, '.bench');
  const cgDir = join(work, `callgrind-${process.pid}`);
  mkdirSync(cgDir, { recursive: true });
  const tools = findTools(root, { install });
  const ctx: TargetContext & { loadCore: number } = {
    root, work, tools, proxyCore, loadCore,
    wrapper: ['valgrind', '--tool=callgrind', '--trace-children=yes', `--callgrind-out-file=${cgDir}/cg.%p`, `--log-file=${cgDir}/valgrind.%p.log`],
    startTimeoutMs: 300_000,
  };
  const runCtx: RunContext = { tools, loadCore, seconds, idleConnections: 0 };
  let targets: Target[] = [packetpony(false), packetpony(true)];
  if (baseline !== undefined) targets = [...targets, packetpony(false, baseline, 'base'), packetpony(true, baseline, 'base')];
  targets = targets.filter((t) => wanted.includes(t.id.replace(/@.*/, '')));
  const rows = ROWS.filter((r) => rowIds.includes(r.id));
  const notes: string[] = [];

  const started = Date.now();
  const results = new Map<string, Map<string, Count>>();
  /** Features off, natively: the user-space share of the CPU time per row. */
  const shares = new Map<string, number>();
  const withCost = wanted.includes('pp-off') && wanted.includes('pp-on');
  try {
    const groups = new Map<BackendKind, Row[]>();
    for (const row of rows) {
      const why = row.unavailable(tools);
      if (why !== null) notes.push(`${row.title}: not counted (${why})`);
      else groups.set(row.backend, [...(groups.get(row.backend) ?? []), row]);
    }
    for (const [kind, groupRows] of groups) {
      const backend = await startBackend(kind, ctx);
      try {
        for (const row of groupRows) results.set(row.id, new Map());
        for (const target of targets) {
          const counts = await countTarget(target, groupRows, backend.port, ctx, runCtx, repeats, cgDir);
          for (const [id, count] of counts) results.get(id)!.set(target.id, count);
        }
        if (withCost) {
          const native: TargetContext = { root, work, tools, proxyCore };
          for (const [id, share] of await userShare(packetpony(false), groupRows, backend.port, native, runCtx, repeats)) shares.set(id, share);
        }
      } finally {
        await backend.stop();
      }
    }
  } finally {
    if (args.includes('--keep')) log(`callgrind's files kept in ${cgDir}`);
    else rmSync(cgDir, { recursive: true, force: true });
  }

  const base = baseline !== undefined;
  const lines = [
    `Instructions per operation in user space, supervisor + child, counted by callgrind: the median of ${repeats} counted runs of ${seconds} s after the warm-up (± half their spread).`,
    `${new Date(started).toISOString().slice(0, 16).replace('T', ' ')} UTC, ${os.cpus()[0]?.model.trim() ?? 'unknown CPU'}, Node ${process.version}, ${Math.round((Date.now() - started) / 1000)} s.`,
    '',
    `| Row | per | ${targets.map((t) => t.label).join(' | ')} | features add, user space | user space share of CPU, natively (off) | cost of features in CPU time, estimated |${base ? ' features add, user space (base) |' : ''}`,
    `|---|---|${targets.map(() => '---:').join('|')}|---:|---:|---:|${base ? '---:|' : ''}`,
  ];
  for (const row of rows) {
    const byTarget = results.get(row.id);
    if (byTarget === undefined) continue;
    const features = added(byTarget.get('pp-on'), byTarget.get('pp-off'));
    const share = shares.get(row.id) ?? NaN;
    lines.push(`| ${row.title} | ${row.opName} | ${targets.map((t) => cell(byTarget.get(t.id))).join(' | ')} | ${percent(features)} | ${Number.isNaN(share) ? '–' : `${(share * 100).toFixed(0)} %`} | ${percent(features * share)} |${base ? ` ${percent(added(byTarget.get('pp-on@base'), byTarget.get('pp-off@base')))} |` : ''}`);
  }
  for (const note of notes) lines.push('', `- ${note}`);
  const text = lines.join('\n') + '\n';
  if (out !== undefined) writeFileSync(out, text);
  process.stdout.write(text);
}

main().catch((err: unknown) => {
  process.stderr.write(`instructions: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
