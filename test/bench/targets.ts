/**
 * The things a row measures through: direct (no proxy, the ceiling), the bare Node relay, PacketPony
 * with features off and on, and haproxy / nginx stream / socat when installed. Each proxy runs
 * pinned to the proxy core; start() gives the port the load goes to, stop() ends every process the
 * target started (by PID, descendants included) and removes its files.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, fstatSync, mkdirSync, openSync, readSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, tcpListening, udpBound } from './net-util.js';
import { cpuGroup, type CpuGroup } from './cpu-quota.js';
import { processTree, start, stop, waitFor, type Cores, type Started } from './procs.js';
import type { Tools } from './tools.js';

export type Proto = 'tcp' | 'udp';

export interface TargetContext {
  readonly root: string;
  readonly work: string;
  readonly tools: Tools;
  readonly proxyCore: Cores;
  /** Threads (HAProxy nbthread) or worker processes (nginx) of the other proxies; default 1. */
  readonly threads?: number;
  /** --proxy-cpu: CPUs each worker or thread of a proxy may use (a cgroup quota); undefined: no quota. */
  readonly proxyCpu?: number;
  /** Extra node options for PacketPony (--profile: --cpu-prof; children inherit execArgv). */
  readonly nodeArgs?: readonly string[];
  /** A program PacketPony's node runs under, with its arguments (instructions.ts: valgrind). */
  readonly wrapper?: readonly string[];
  /** How long PacketPony may take to serve (default 20 s; far longer under valgrind). */
  readonly startTimeoutMs?: number;
}

export interface Running {
  /** Where the load goes. */
  readonly port: number;
  /** The processes whose memory the RSS row sums (empty for direct). */
  pids(): number[];
  /**
   * The first of pids() forks a process per connection (socat): its CPU is then the whole tree's,
   * read anew at the end of a run, with the children reaped during it (forkingTreeCpuNs).
   */
  readonly forksPerConnection?: boolean;
  /** Rewrites the listener's file and resolves once the new version serves (PacketPony only). */
  reload?(): Promise<void>;
  stop(): Promise<void>;
}

export interface Target {
  readonly id: string;
  readonly label: string;
  /** Why it is left out, or null when it can run. */
  unavailable(proto: Proto, ctx: TargetContext): string | null;
  start(proto: Proto, backendPort: number, ctx: TargetContext): Promise<Running>;
}

let serial = 0;

/**
 * Under --proxy-cpu, the proxy's own cgroup: that many CPUs for each of its workers or threads
 * (cpu-quota.ts); undefined otherwise.
 */
function quotaFor(ctx: TargetContext, id: string, threads: number): CpuGroup | undefined {
  return ctx.proxyCpu === undefined ? undefined : cpuGroup(`${id}-${process.pid}-${++serial}`, ctx.proxyCpu * threads);
}

function workDir(ctx: TargetContext, id: string): string {
  const dir = join(ctx.work, `${id}-${process.pid}-${++serial}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

async function stopTree(p: Started): Promise<void> {
  const tree = processTree(p.pid);
  await stop(p);
  // Descendants left behind (socat's forks, a child that missed its parent's exit): by PID.
  for (const pid of tree.slice(1)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

async function waitBound(proto: Proto, port: number, p: Started, what: string): Promise<void> {
  await waitFor(() => {
    if (p.child.exitCode !== null) throw new Error(`${what} exited: ${p.err().slice(-500)}`);
    return (proto === 'tcp' ? tcpListening(port) : udpBound(port)) || undefined;
  }, `${what} to listen on ${port}`);
}

export const direct: Target = {
  id: 'direct',
  label: 'direct',
  unavailable: () => null,
  start: async (_proto, backendPort) => ({ port: backendPort, pids: () => [], stop: async () => {} }),
};

export const nodeRelay: Target = {
  id: 'node',
  label: 'bare Node',
  unavailable: () => null,
  async start(proto, backendPort, ctx) {
    const script = join(ctx.root, 'dist/test/bench/node-relay.js');
    const p = start('node-relay', process.execPath, [script, proto, '0', String(backendPort)], { core: ctx.proxyCore });
    const port = await waitFor(() => {
      if (p.child.exitCode !== null) throw new Error(`node relay exited: ${p.err()}`);
      const m = /ready (\d+)/.exec(p.out());
      return m ? Number(m[1]) : undefined;
    }, 'the node relay');
    return { port, pids: () => processTree(p.pid), stop: () => stopTree(p) };
  },
};

/** Ten CIDRs, the client's last, so a match walks the list as a real allowlist would. */
const TEN_CIDRS = [
  '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', '198.18.0.0/15',
  '2001:db8::/32', 'fd00::/8', '203.0.113.0/24', '198.51.100.0/24', '127.0.0.0/8',
];

/**
 * PacketPony with features off or on. `product` is the package root to run (default: this
 * checkout); a second build given with --baseline becomes extra targets, so a change is measured
 * against the code before it in the same run. `node` is the Node binary it runs under (default
 * this process's; --node adds targets under another line, its children follow it). `workers`
 * above 1 (the two-core rows) sets the listener's workers: and makes the ids pp-off-w2 etc.
 */
export function packetpony(features: boolean, product: string | null = null, tag = '', shared = false, node: string | null = null, workers = 1): Target {
  const suffix = tag === '' ? '' : `@${tag}`;
  const name = (shared ? 'pp-shared' : features ? 'pp-on' : 'pp-off') + (workers > 1 ? `-w${workers}` : '');
  return {
    id: name + suffix,
    label: (shared ? 'PacketPony on, shared' : features ? 'PacketPony on' : 'PacketPony off') + (workers > 1 ? `, ${workers} workers` : '') + (tag === '' ? '' : ` (${tag})`),
    unavailable: () => (shared && !haveRedisServer() ? 'redis-server not installed' : null),
    async start(proto, backendPort, ctx) {
      const dir = workDir(ctx, name);
      const group = quotaFor(ctx, name, workers);
      mkdirSync(join(dir, 'conf.d'));
      // The log in a folder of its own, as under /var/log. (Next to the main file it once cost the
      // supervisor a tenth of its CPU under a connection per request: the config watcher re-read
      // that folder on every write. It now filters the folder's events by name.)
      mkdirSync(join(dir, 'log'));
      const port = await freePort();
      const events = join(dir, 'log', 'events.json');
      // Shared: the features-on set plus rate_limits.shared through a local redis-server of its own.
      const store = shared ? await startStore(dir) : null;
      const main = features
        ? `server:\n  shutdown_timeout: "2s"\nlogging:\n  jsonlog:\n    enabled: true\n    path: "${events}"\n` +
          `metrics:\n  prometheus:\n    enabled: true\n    listen_address: "127.0.0.1:${await freePort()}"\n` +
          (store === null ? '' : `shared_limits:\n  store: "redis://127.0.0.1:${store.port}/0"\n  instance: bench\n`)
        : // No sink enabled means text lines on stdout (the product never runs silent); the bench
          // reads them from a pipe.
          `server:\n  shutdown_timeout: "2s"\n`;
      writeFileSync(join(dir, 'packetpony.yaml'), main);
      let generation = 0;
      const listener = (): string => {
        const lines = [
          `protocol: ${proto}`,
          `listen_address: "127.0.0.1:${port}"`,
          `target_address: "127.0.0.1:${backendPort}"`,
          ...(workers > 1 ? [`workers: ${workers}`] : []),
        ];
        if (features) {
          lines.push(`allowlist: [${TEN_CIDRS.map((c) => `"${c}"`).join(', ')}]`);
          // Every limit set, high enough never to trigger; the generation makes each reload a change.
          lines.push(
            'rate_limits:',
            '  max_connections_per_ip: 1000000',
            '  max_connection_attempts_per_ip: 1000000000',
            '  attempts_window: "1m"',
            '  max_bandwidth_per_ip: "100000GB"',
            '  bandwidth_window: "1m"',
            `  max_total_connections: ${1_000_000 + generation}`,
            '  action: drop',
            ...(shared ? ['  shared: true'] : []),
          );
        } else {
          lines.push('allowlist: ["0.0.0.0/0", "::/0"]');
          if (generation > 0) lines.push(`tcp:\n  connect_timeout: "${10 + generation}s"`);
        }
        if (proto === 'udp') lines.push('udp:\n  session_timeout: "30s"');
        return lines.join('\n') + '\n';
      };
      writeFileSync(join(dir, 'conf.d/bench.yaml'), listener());
      const cli = join(product ?? ctx.root, 'dist/src/cli.js');
      // "listener bench up" lines (with workers, "listener bench/1 up" and so on: a version
      // serves once each of its workers is up), counted as they come (stdout) or read
      // incrementally (the JSON log grows by thousands of events per second: never re-read whole).
      const markers = workers > 1 ? Array.from({ length: workers }, (_, i) => `listener bench/${i + 1} up`) : ['listener bench up'];
      const seen = markers.map(() => 0);
      let upLines = 0;
      let tail = '';
      const scan = (chunk: string): void => {
        const text = tail + chunk;
        markers.forEach((marker, i) => (seen[i]! += text.split(marker).length - 1));
        upLines = Math.min(...seen);
        // Short of a whole marker (all the same length below 10 workers), so none counts twice.
        tail = text.slice(-(markers[0]!.length - 1));
      };
      const argv = [...(ctx.wrapper ?? []), node ?? process.execPath, ...(ctx.nodeArgs ?? []), cli, '--config', join(dir, 'packetpony.yaml')];
      const p = start('packetpony', argv[0]!, argv.slice(1), {
        core: ctx.proxyCore,
        ...(group !== undefined ? { cgroup: group.path } : {}),
        cwd: dir,
        ...(features ? { capture: true } : { onStdout: scan }),
      });
      let offset = 0;
      const ups = (): number => {
        if (features) {
          let fd = -1;
          try {
            fd = openSync(events, 'r');
            const size = fstatSync(fd).size;
            if (size > offset) {
              const buf = Buffer.alloc(Math.min(size - offset, 16 << 20));
              const n = readSync(fd, buf, 0, buf.length, offset);
              offset += n;
              scan(buf.toString('utf8', 0, n));
            }
          } catch {
            // not created yet
          } finally {
            if (fd >= 0) closeSync(fd);
          }
        }
        return upLines;
      };
      try {
        await waitFor(() => {
          if (p.child.exitCode !== null) throw new Error(`packetpony exited: ${p.err()} ${p.out()}`);
          return ups() > 0 || undefined;
        }, 'packetpony to serve', ctx.startTimeoutMs ?? 20_000);
        await waitBound(proto, port, p, 'packetpony');
      } catch (err) {
        await stopTree(p);
        if (store !== null) await stop(store.process);
        rmSync(dir, { recursive: true, force: true });
        group?.remove();
        throw err;
      }
      return {
        port,
        pids: () => processTree(p.pid),
        async reload() {
          const before = ups();
          generation++;
          // Written to a temporary name and renamed, as an editor or config tool would.
          writeFileSync(join(dir, 'conf.d/.bench.yaml.tmp'), listener());
          renameSync(join(dir, 'conf.d/.bench.yaml.tmp'), join(dir, 'conf.d/bench.yaml'));
          await waitFor(() => ups() > before || undefined, 'the reloaded listener', 30_000);
        },
        async stop() {
          await stopTree(p);
          if (store !== null) await stop(store.process);
          rmSync(dir, { recursive: true, force: true });
          group?.remove();
        },
      };
    },
  };
}

function haveRedisServer(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** A redis-server for the shared rows, on a free loopback port, without persistence. */
async function startStore(dir: string): Promise<{ port: number; process: Started }> {
  const port = await freePort();
  const p = start('redis-server', 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir]);
  await waitFor(() => {
    if (p.child.exitCode !== null) throw new Error(`redis-server exited: ${p.err()} ${p.out()}`);
    return tcpListening(port) || undefined;
  }, 'redis-server');
  return { port, process: p };
}

export const packetponyOff = packetpony(false);
export const packetponyOn = packetpony(true);
/** Features on plus shared limits through a local redis-server (issue 24). */
export const packetponyShared = packetpony(true, null, '', true);

/**
 * HAProxy with `nbthread` from the run (ctx.threads: 2 in the two-core run), or with `threads` fixed
 * (the two-core run's one-thread control, id haproxy-1).
 */
export function haproxyTarget(threads?: number): Target {
  return {
    id: threads === undefined ? 'haproxy' : `haproxy-${threads}`,
    label: threads === undefined ? 'HAProxy' : `HAProxy, ${threads} thread${threads > 1 ? 's' : ''}`,
    unavailable: (proto, ctx) => (ctx.tools.haproxy === null ? 'not installed' : proto === 'udp' ? 'TCP only' : null),
    async start(_proto, backendPort, ctx) {
      const dir = workDir(ctx, 'haproxy');
      const group = quotaFor(ctx, 'haproxy', threads ?? ctx.threads ?? 1);
      const port = await freePort();
      const cfg = join(dir, 'haproxy.cfg');
      writeFileSync(cfg, [
        'global', '  maxconn 9000', `  nbthread ${threads ?? ctx.threads ?? 1}`,
        'defaults', '  mode tcp', '  timeout connect 5s', '  timeout client 10m', '  timeout server 10m',
        'frontend bench', `  bind 127.0.0.1:${port}`, '  default_backend target',
        'backend target', `  server s1 127.0.0.1:${backendPort}`, '',
      ].join('\n'));
      const p = start('haproxy', ctx.tools.haproxy!, ['-db', '-f', cfg], { core: ctx.proxyCore, ...(group !== undefined ? { cgroup: group.path } : {}) });
      return serving('tcp', port, p, dir, group, 'haproxy');
    },
  };
}

export const haproxy = haproxyTarget();

/**
 * A proxy process started with a work folder (and under --proxy-cpu its cgroup): Running once it
 * listens on `port`; every process, the folder and the group gone on stop() or when it never does.
 */
async function serving(proto: Proto, port: number, p: Started, dir: string, group: CpuGroup | undefined, what: string): Promise<Running> {
  const stopAll = async (): Promise<void> => {
    await stopTree(p);
    rmSync(dir, { recursive: true, force: true });
    group?.remove();
  };
  await waitBound(proto, port, p, what).catch(async (err: unknown) => {
    await stopAll();
    throw err;
  });
  return { port, pids: () => processTree(p.pid), stop: stopAll };
}

/** nginx stream with worker_processes from the run, or fixed (the two-core run's control, nginx-1). */
export function nginxStreamTarget(workers?: number): Target {
  return {
    id: workers === undefined ? 'nginx' : `nginx-${workers}`,
    label: workers === undefined ? 'nginx stream' : `nginx stream, ${workers} worker${workers > 1 ? 's' : ''}`,
    unavailable: (_proto, ctx) => (ctx.tools.nginx === null ? 'not installed' : ctx.tools.nginxStreamModule === null ? 'no stream module' : null),
    async start(proto, backendPort, ctx) {
      const dir = workDir(ctx, 'nginx');
      const count = workers ?? ctx.threads ?? 1;
      const group = quotaFor(ctx, 'nginx', count);
      const port = await freePort();
      const conf = join(dir, 'nginx.conf');
      writeFileSync(conf, [
        ctx.tools.nginxStreamModule !== null ? `load_module ${ctx.tools.nginxStreamModule};` : '',
        'daemon off;', 'user root;', `worker_processes ${count};`, 'worker_rlimit_nofile 65536;',
        `pid ${dir}/nginx.pid;`, `error_log ${dir}/error.log error;`,
        'events { worker_connections 20000; }',
        'stream {',
        // Several workers: a reuseport socket each, as nginx advises for UDP and for spreading.
        `  server { listen 127.0.0.1:${port}${proto === 'udp' ? ' udp' : ''}${count > 1 ? ' reuseport' : ''}; proxy_pass 127.0.0.1:${backendPort}; proxy_timeout 10m; }`,
        '}', '',
      ].join('\n'));
      const p = start('nginx-stream', ctx.tools.nginx!, ['-p', dir, '-c', conf, '-e', join(dir, 'error.log')], { core: ctx.proxyCore, ...(group !== undefined ? { cgroup: group.path } : {}) });
      return serving(proto, port, p, dir, group, 'nginx');
    },
  };
}

export const nginxStream = nginxStreamTarget();

export const socat: Target = {
  id: 'socat',
  label: 'socat',
  unavailable: (proto, ctx) => (ctx.tools.socat === null ? 'not installed' : proto === 'udp' ? 'left out: a process per UDP peer' : null),
  async start(_proto, backendPort, ctx) {
    const port = await freePort();
    const p = start('socat', ctx.tools.socat!, [
      `TCP4-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork,backlog=1024`, `TCP4:127.0.0.1:${backendPort}`,
    ], { core: ctx.proxyCore });
    await waitBound('tcp', port, p, 'socat');
    return { port, pids: () => processTree(p.pid), forksPerConnection: true, stop: () => stopTree(p) };
  },
};

export const ALL_TARGETS: readonly Target[] = [direct, nodeRelay, packetponyOff, packetponyOn, packetponyShared, haproxy, nginxStream, socat];
