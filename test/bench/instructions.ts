/**
 * `npm run bench:instructions [-- options]`: what PacketPony's features cost, counted instead of
 * timed. PacketPony runs under valgrind's callgrind (supervisor and child alike), a fixed load goes
 * through it, and the instructions its processes executed per operation are read with
 * callgrind_control (zeroed before the load, dumped after). The counts are the same from one run to
 * the next whatever the machine's speed, where timed figures on this machine drift by ±25 % between
 * cells of one run: they can show a cost of a few per cent, or a change in the code, that timing
 * cannot.
 *
 * What the count leaves out: the kernel (callgrind sees user space only). Features off and on make
 * the same system calls on the data path, so the kernel's share is the same for both and the
 * ratio of user-space instructions is an upper bound on what features cost in CPU time. Under
 * callgrind the proxy runs ~50× slower than the load, so each read finds its buffer full: per MB,
 * the TCP rows count the fewest reads there can be.
 *
 * Options:
 *   --rows a,b        tcp-up, tcp-down, tcp-rr, tcp-new, udp (default all)
 *   --targets a,b     pp-off, pp-on (default both)
 *   --baseline DIR    also count the build whose package root is DIR (pp-off@base, pp-on@base)
 *   --repeats N       counted runs per row and target (default 3), after one warm-up run
 *   --scale X         multiplies every row's operation count (default 1)
 *   --proxy-core N    core for PacketPony (default 0); --load-core N for the load (default 1)
 *   --out FILE        also write the markdown there
 *
 * Loads (in this process, on the load core; backends here too, not counted):
 *   tcp-up / tcp-down  one connection moving 256 MiB client → target / target → client (op: MB)
 *   tcp-rr             32 kept connections, 80-byte requests answered with 240 bytes (op: exchange)
 *   tcp-new            a connection per exchange, 32 at once, the target closing first (op: connection)
 *   udp                64 sessions, 64-byte datagrams echoed (op: round trip)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './procs.js';
import { packetpony, type Proto, type Running, type Target, type TargetContext } from './targets.js';
import { findTools, which } from './tools.js';

// ---- the loads --------------------------------------------------------------------------------

const REQUEST = 80;
const RESPONSE = 240;
const STREAM_BYTES = 256 << 20;

/**
 * One TCP backend for every TCP row; a connection's first byte says what it wants: 'U' take
 * everything until the client's end, then answer one byte and end; 'D' send STREAM_BYTES and end;
 * 'R' answer every REQUEST bytes with RESPONSE bytes; 'C' the same once, then end (HTTP's
 * "Connection: close").
 */
function tcpBackend(): Promise<{ port: number; close(): Promise<void> }> {
  const response = Buffer.alloc(RESPONSE, 'r');
  const chunk = Buffer.alloc(64 << 10, 'd');
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    let mode = '';
    let pending = 0;
    socket.on('data', (data: Buffer) => {
      if (mode === '') {
        mode = String.fromCharCode(data[0]!);
        if (mode === 'D') {
          let left = STREAM_BYTES;
          const pump = (): void => {
            while (left > 0) {
              left -= chunk.length;
              if (!socket.write(chunk)) return void socket.once('drain', pump);
            }
            socket.end();
          };
          pump();
        }
      }
      if (mode === 'R' || mode === 'C') {
        pending += data.length;
        while (pending >= REQUEST) {
          pending -= REQUEST;
          socket.write(response);
          if (mode === 'C') return void socket.end();
        }
      }
    });
    socket.on('end', () => {
      if (mode === 'U') socket.end('k');
    });
  });
  return new Promise((resolvePort) => {
    server.listen(0, '127.0.0.1', () => resolvePort({
      port: (server.address() as net.AddressInfo).port,
      close: () => new Promise((done) => {
        server.close(() => done());
      }),
    }));
  });
}

function udpBackend(): Promise<{ port: number; close(): Promise<void> }> {
  const socket = dgram.createSocket('udp4');
  socket.on('message', (msg, from) => socket.send(msg, from.port, from.address));
  socket.on('error', () => {});
  return new Promise((resolvePort) => {
    socket.bind(0, '127.0.0.1', () => resolvePort({
      port: socket.address().port,
      close: () => new Promise((done) => socket.close(() => done())),
    }));
  });
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolveSocket, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    socket.once('connect', () => resolveSocket(socket));
    socket.once('error', reject);
  });
}

/** Bytes through one connection: 'U' writes them, 'D' reads them. Resolves at the end of both. */
async function stream(port: number, mode: 'U' | 'D'): Promise<void> {
  const socket = await connect(port);
  await new Promise<void>((done, fail) => {
    socket.once('error', fail);
    let received = 0;
    socket.on('data', (data: Buffer) => (received += data.length));
    socket.once('end', () => {
      socket.end();
      if (mode === 'D' && received !== STREAM_BYTES) fail(new Error(`tcp-down: ${received} of ${STREAM_BYTES} bytes arrived`));
      else done();
    });
    if (mode === 'D') return void socket.write('D');
    const chunk = Buffer.alloc(64 << 10, 'u');
    chunk[0] = 'U'.charCodeAt(0);
    let left = STREAM_BYTES;
    const pump = (): void => {
      while (left > 0) {
        left -= chunk.length;
        if (!socket.write(chunk)) return void socket.once('drain', pump);
      }
      socket.end();
    };
    pump();
  });
  socket.destroy();
}

/** `exchanges` request/response pairs spread over the given kept connections. */
function exchange(sockets: readonly net.Socket[], exchanges: number): Promise<void> {
  const request = Buffer.alloc(REQUEST, 'q');
  request[0] = 'R'.charCodeAt(0);
  let started = 0;
  let finished = 0;
  return new Promise((done, fail) => {
    for (const socket of sockets) {
      let got = 0;
      const onData = (data: Buffer): void => {
        got += data.length;
        if (got < RESPONSE) return;
        got -= RESPONSE;
        if (++finished === exchanges) {
          cleanup();
          done();
        } else if (started < exchanges) {
          started++;
          socket.write(request);
        }
      };
      const onError = (err: Error): void => {
        cleanup();
        fail(err);
      };
      const cleanup = (): void => {
        for (const s of sockets) {
          s.removeAllListeners('data');
          s.removeAllListeners('error');
          s.on('error', () => {});
        }
      };
      socket.on('data', onData);
      socket.once('error', onError);
      if (started < exchanges) {
        started++;
        socket.write(request);
      }
    }
  });
}

/** `count` connections, `concurrency` at once: connect, one request, the answer, the target's end. */
async function connections(port: number, count: number, concurrency: number): Promise<void> {
  const request = Buffer.alloc(REQUEST, 'q');
  request[0] = 'C'.charCodeAt(0);
  let next = 0;
  const one = async (): Promise<void> => {
    const socket = await connect(port);
    await new Promise<void>((done, fail) => {
      let got = 0;
      socket.on('data', (data: Buffer) => (got += data.length));
      socket.once('error', fail);
      socket.once('end', () => (got === RESPONSE ? done() : fail(new Error(`tcp-new: ${got} of ${RESPONSE} bytes`))));
      socket.write(request);
    });
    socket.destroy();
  };
  const worker = async (): Promise<void> => {
    while (next < count) {
      next++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

interface UdpClients {
  /** `roundTrips` datagrams echoed, one outstanding per session; a lost one is sent again after 1 s. */
  run(roundTrips: number): Promise<number>;
  close(): Promise<void>;
}

async function udpClients(port: number, sessions: number): Promise<UdpClients> {
  const sockets: dgram.Socket[] = [];
  for (let i = 0; i < sessions; i++) {
    const socket = dgram.createSocket('udp4');
    socket.on('error', () => {});
    await new Promise<void>((done) => socket.connect(port, '127.0.0.1', done));
    sockets.push(socket);
  }
  const payload = Buffer.alloc(64, 'p');
  return {
    run: (roundTrips) => new Promise<number>((done) => {
      let started = 0;
      let finished = 0;
      let resent = 0;
      const lastSent = new Float64Array(sessions);
      const send = (i: number): void => {
        lastSent[i] = performance.now();
        sockets[i]!.send(payload);
      };
      const timer = setInterval(() => {
        const now = performance.now();
        for (let i = 0; i < sessions; i++) {
          if (lastSent[i]! > 0 && now - lastSent[i]! > 1000) {
            resent++;
            send(i);
          }
        }
      }, 250);
      sockets.forEach((socket, i) => {
        socket.removeAllListeners('message');
        socket.on('message', () => {
          lastSent[i] = 0;
          if (++finished === roundTrips) {
            clearInterval(timer);
            done(resent);
          } else if (started < roundTrips) {
            started++;
            send(i);
          }
        });
        if (started < roundTrips) {
          started++;
          send(i);
        }
      });
    }),
    close: async () => {
      await Promise.all(sockets.map((s) => new Promise<void>((done) => s.close(() => done()))));
    },
  };
}

/** A row: what is set up before counting, the counted load, and what is torn down after. */
interface Load {
  readonly id: string;
  readonly title: string;
  readonly proto: Proto;
  readonly op: string;
  readonly count: number;
  /** Set-up outside the count (kept connections, sessions); returns the counted load. */
  prepare(port: number): Promise<{ run(count: number): Promise<void>; close(): Promise<void> }>;
}

const LOADS: readonly Load[] = [
  {
    id: 'tcp-up', title: 'TCP 1 stream, client → target', proto: 'tcp', op: 'MB', count: STREAM_BYTES / 1e6,
    prepare: async (port) => ({ run: () => stream(port, 'U'), close: async () => {} }),
  },
  {
    id: 'tcp-down', title: 'TCP 1 stream, target → client', proto: 'tcp', op: 'MB', count: STREAM_BYTES / 1e6,
    prepare: async (port) => ({ run: () => stream(port, 'D'), close: async () => {} }),
  },
  {
    id: 'tcp-rr', title: 'TCP request/response, 32 kept connections (as HTTP keep-alive)', proto: 'tcp', op: 'exchange', count: 20_000,
    prepare: async (port) => {
      const sockets = await Promise.all(Array.from({ length: 32 }, () => connect(port)));
      return {
        run: (count) => exchange(sockets, count),
        close: async () => {
          for (const s of sockets) s.destroy();
        },
      };
    },
  },
  {
    id: 'tcp-new', title: 'TCP connection per request, 32 at once (as HTTP new connections)', proto: 'tcp', op: 'connection', count: 2_000,
    prepare: async (port) => ({ run: (count) => connections(port, count, 32), close: async () => {} }),
  },
  {
    id: 'udp', title: 'UDP request/response, 64 sessions', proto: 'udp', op: 'round trip', count: 20_000,
    prepare: async (port) => {
      const clients = await udpClients(port, 64);
      // Every session opened before counting.
      await clients.run(64);
      return {
        run: async (count) => {
          const resent = await clients.run(count);
          if (resent > 0) log(`udp: ${resent} datagrams sent again (lost on loopback)`);
        },
        close: () => clients.close(),
      };
    },
  },
];

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

/** Open descriptors of a process (its sockets come and go with the connections). */
function descriptors(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
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

/**
 * Counts every load of one protocol on one running PacketPony. What the processes do by the clock
 * (the child's stats every second, the supervisor's housekeeping) is measured first with no load
 * and taken out of each run by its duration: under callgrind a run takes ~50× longer than it
 * would natively, and that work would otherwise be charged ~50× over to each operation.
 */
async function countTarget(target: Target, loads: readonly Load[], backendPort: number, ctx: TargetContext, repeats: number, scale: number, cgDir: string): Promise<Map<string, Count>> {
  const running: Running = await target.start(loads[0]!.proto, backendPort, ctx);
  const results = new Map<string, Count>();
  try {
    const pids = running.pids();
    const [supervisor, child] = pids;
    if (supervisor === undefined || child === undefined || pids.length !== 2) throw new Error(`expected a supervisor and one child, found PIDs ${pids.join(', ')}`);
    const idle = await counted(pids, cgDir, () => new Promise((done) => setTimeout(done, IDLE_SECONDS * 1000)));
    const perSecond = new Map(pids.map((pid) => [pid, idle.counts.get(pid)! / idle.seconds]));
    log(`${target.id}: idle ${figure(perSecond.get(child)!)} (child), ${figure(perSecond.get(supervisor)!)} (supervisor) instructions per second`);
    for (const load of loads) {
      const count = Math.max(1, Math.round(load.count * scale));
      const ops = load.op === 'MB' ? load.count : count;
      const result: Count = { supervisor: [], child: [] };
      results.set(load.id, result);
      const prepared = await load.prepare(running.port);
      try {
        // Warm-up: the JIT's compilations and the first allocations are not what a run costs.
        await prepared.run(count);
        for (let i = 0; i < repeats; i++) {
          const settled = descriptors(child);
          const { counts, seconds } = await counted(pids, cgDir, async () => {
            await prepared.run(count);
            // The child's end of the last connections (and the supervisor's log lines) belong to
            // this run: wait until its descriptors are back where they were.
            await waitFor(() => descriptors(child) <= settled || undefined, 'the child to close its connections', 120_000);
          });
          const perOp = (pid: number): number => Math.max(0, counts.get(pid)! - perSecond.get(pid)! * seconds) / ops;
          result.supervisor.push(perOp(supervisor));
          result.child.push(perOp(child));
          log(`${target.id} ${load.id}: child ${figure(perOp(child))}, supervisor ${figure(perOp(supervisor))} instructions per ${load.op} (${seconds.toFixed(1)} s)`);
        }
      } finally {
        await prepared.close();
      }
    }
  } finally {
    await running.stop();
  }
  return results;
}

// ---- report -----------------------------------------------------------------------------------

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function figure(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} k` : n.toFixed(0);
}

function cell(c: Count | undefined): string {
  if (c === undefined) return '–';
  const totals = c.child.map((v, i) => v + c.supervisor[i]!);
  const spread = (Math.max(...totals) - Math.min(...totals)) / median(totals);
  return `${figure(median(totals))} (child ${figure(median(c.child))}, ±${(spread * 50).toFixed(1)} %)`;
}

function cost(on: Count | undefined, off: Count | undefined): string {
  if (on === undefined || off === undefined) return '–';
  const total = (c: Count): number => median(c.child.map((v, i) => v + c.supervisor[i]!));
  const pct = (total(on) / total(off) - 1) * 100;
  return `${pct >= 0 ? '+' : ''}${pct.toFixed(1)} %`;
}

// ---- main -------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const option = (name: string): string | undefined => {
    const i = args.indexOf(name);
    return i < 0 ? undefined : args[i + 1];
  };
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
  const rows = (option('--rows')?.split(',') ?? LOADS.map((l) => l.id)).map((id) => {
    const load = LOADS.find((l) => l.id === id);
    if (load === undefined) throw new Error(`unknown row ${id} (rows: ${LOADS.map((l) => l.id).join(', ')})`);
    return load;
  });
  const wanted = option('--targets')?.split(',') ?? ['pp-off', 'pp-on'];
  const baseline = option('--baseline');
  const repeats = Number(option('--repeats') ?? 3);
  const scale = Number(option('--scale') ?? 1);
  const proxyCore = Number(option('--proxy-core') ?? 0);
  const loadCore = Number(option('--load-core') ?? 1);
  const out = option('--out');
  if (which('valgrind') === null || which('callgrind_control') === null) {
    throw new Error('valgrind is not installed (Debian: apt-get install valgrind)');
  }
  try {
    execFileSync('taskset', ['-pc', String(loadCore), String(process.pid)], { stdio: 'ignore' });
  } catch {
    log('taskset failed: nothing is pinned');
  }
  const work = join(root, '.bench');
  const cgDir = join(work, `callgrind-${process.pid}`);
  mkdirSync(cgDir, { recursive: true });
  const ctx: TargetContext = {
    root, work, tools: findTools(root, { install: false }), proxyCore,
    wrapper: ['valgrind', '--tool=callgrind', '--trace-children=yes', `--callgrind-out-file=${cgDir}/cg.%p`, `--log-file=${cgDir}/valgrind.%p.log`],
    startTimeoutMs: 300_000,
  };
  let targets: Target[] = [packetpony(false), packetpony(true)];
  if (baseline !== undefined) targets = [...targets, packetpony(false, baseline, 'base'), packetpony(true, baseline, 'base')];
  targets = targets.filter((t) => wanted.includes(t.id.replace(/@.*/, '')));

  const started = Date.now();
  const results = new Map<string, Map<string, Count>>();
  try {
    for (const proto of ['tcp', 'udp'] as const) {
      const protoRows = rows.filter((r) => r.proto === proto);
      if (protoRows.length === 0) continue;
      const backend = proto === 'tcp' ? await tcpBackend() : await udpBackend();
      try {
        for (const load of protoRows) results.set(load.id, new Map());
        for (const target of targets) {
          const counts = await countTarget(target, protoRows, backend.port, ctx, repeats, scale, cgDir);
          for (const [id, count] of counts) results.get(id)!.set(target.id, count);
        }
      } finally {
        await backend.close();
      }
    }
  } finally {
    rmSync(cgDir, { recursive: true, force: true });
  }

  const lines = [
    `Instructions per operation, user space, supervisor + child (median of ${repeats} counted runs after a warm-up; ± is half the spread), counted by callgrind.`,
    `${new Date(started).toISOString().slice(0, 16).replace('T', ' ')} UTC, ${os.cpus()[0]?.model.trim() ?? 'unknown CPU'}, Node ${process.version}, ${Math.round((Date.now() - started) / 1000)} s.`,
    '',
    `| Row | per | ${targets.map((t) => t.id).join(' | ')} | cost of features |${baseline !== undefined ? ' cost of features (base) |' : ''}`,
    `|---|---|${targets.map(() => '---:').join('|')}|---:|${baseline !== undefined ? '---:|' : ''}`,
  ];
  for (const load of rows) {
    const byTarget = results.get(load.id)!;
    lines.push(`| ${load.title} | ${load.op} | ${targets.map((t) => cell(byTarget.get(t.id))).join(' | ')} | ${cost(byTarget.get('pp-on'), byTarget.get('pp-off'))} |${baseline !== undefined ? ` ${cost(byTarget.get('pp-on@base'), byTarget.get('pp-off@base'))} |` : ''}`);
  }
  const text = lines.join('\n') + '\n';
  if (out !== undefined) writeFileSync(out, text);
  process.stdout.write(text);
}

main().catch((err: unknown) => {
  process.stderr.write(`instructions: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
