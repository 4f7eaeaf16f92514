/**
 * The soak (reliability case 14), on demand: `npm run soak -- --minutes 30`.
 *
 * Runs the real daemon with a TCP and a UDP listener under steady mixed load — short TCP
 * connections at a fixed rate and UDP request/response sessions — while it reloads the TCP
 * listener's configuration every `--reload-every` seconds and SIGKILLs the UDP child every
 * `--kill-every` seconds. Every `--sample` seconds it prints one row: RSS and open descriptors of
 * the supervisor and of the children, the supervisor's event-loop delay (prom-client's p99 since
 * the previous scrape), the round-trip latency through the proxy (p99), and throughput.
 *
 * At the end it fits a line to each series (the first 20 % of the run is warm-up and left out) and
 * fails (exit 1) unless every slope, extrapolated over the run ("drift"), is near zero:
 *   RSS: less than max(10 MiB, 10 % of its mean); descriptors: less than max(10, 20 % of the mean)
 *   (connections in flight come and go); event-loop delay p99: less than 10 ms; round-trip
 *   latency p50: less than max(10 ms, 50 % of its mean); throughput: within ±10 % of its mean.
 * A short run on a busy machine is noisy; the verdict means something from ~10 minutes on.
 * Loopback only; everything it starts is stopped by PID and its temp folder removed.
 */
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { CLI } from '../../helpers/paths.js';

interface Options {
  minutes: number;
  sample: number;
  reloadEvery: number;
  killEvery: number;
  tcpRate: number;
  udpRate: number;
}

function parseOptions(argv: string[]): Options {
  const options: Options = { minutes: 30, sample: 0, reloadEvery: 60, killEvery: 90, tcpRate: 200, udpRate: 1000 };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i]!.split('=');
    const value = Number(inline ?? argv[++i]);
    if (!Number.isFinite(value) || value <= 0) throw new Error(`bad value for ${flag}`);
    switch (flag) {
      case '--minutes': options.minutes = value; break;
      case '--sample': options.sample = value; break;
      case '--reload-every': options.reloadEvery = value; break;
      case '--kill-every': options.killEvery = value; break;
      case '--tcp-rate': options.tcpRate = value; break;
      case '--udp-rate': options.udpRate = value; break;
      default: throw new Error(`unknown option ${flag} (--minutes, --sample, --reload-every, --kill-every, --tcp-rate, --udp-rate)`);
    }
  }
  if (options.sample === 0) options.sample = Math.max(5, Math.round((options.minutes * 60) / 60));
  return options;
}

const rss = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
const fds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * p) - 1)]!;
}

/** Least-squares slope of y over x. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const cleanups: Array<() => void | Promise<void>> = [];
  const cleanup = async (): Promise<void> => {
    for (const f of cleanups.reverse()) await f();
  };
  process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    await run(options, cleanups);
  } finally {
    await cleanup();
  }
}

async function run(options: Options, cleanups: Array<() => void | Promise<void>>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'pp-soak-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));

  // Backends: a TCP echo and a UDP echo, on loopback.
  const tcpSockets = new Set<net.Socket>();
  const tcpBackend = net.createServer((socket) => {
    tcpSockets.add(socket);
    socket.on('close', () => tcpSockets.delete(socket));
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => tcpBackend.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => {
    for (const s of tcpSockets) s.destroy();
    tcpBackend.close(() => resolve());
  }));
  const udpBackend = dgram.createSocket('udp4');
  udpBackend.on('message', (msg, from) => udpBackend.send(msg, from.port, from.address));
  await new Promise<void>((resolve) => udpBackend.bind(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => udpBackend.close(() => resolve())));

  const allow = 'allowlist: ["127.0.0.0/8"]\n';
  const tcpFile = (idle: string): string => `protocol: tcp\nlisten_address: "127.0.0.1:0"\ntarget_address: "127.0.0.1:${(tcpBackend.address() as net.AddressInfo).port}"\n${allow}tcp:\n  idle_timeout: "${idle}"\n`;
  mkdirSync(join(dir, 'conf.d'));
  writeFileSync(join(dir, 'packetpony.yaml'), 'logging:\n  stdout:\n    enabled: true\nmetrics:\n  prometheus:\n    enabled: true\n    listen_address: "127.0.0.1:0"\nserver:\n  shutdown_timeout: "5s"\n');
  writeFileSync(join(dir, 'conf.d', 'soak-tcp.yaml'), tcpFile('5m'));
  writeFileSync(join(dir, 'conf.d', 'soak-udp.yaml'), `protocol: udp\nlisten_address: "127.0.0.1:0"\ntarget_address: "127.0.0.1:${udpBackend.address().port}"\n${allow}udp:\n  session_timeout: "10s"\n`);

  const daemon = spawn(process.execPath, [CLI, '--config', join(dir, 'packetpony.yaml')], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const daemonPid = daemon.pid!;
  cleanups.push(async () => {
    if (!alive(daemonPid)) return;
    daemon.kill('SIGTERM');
    for (let i = 0; i < 100 && alive(daemonPid); i++) await delay(100);
    if (alive(daemonPid)) daemon.kill('SIGKILL');
  });
  let stderr = '';
  daemon.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c).length > 100_000 && (stderr = stderr.slice(-50_000)));
  const state = { metricsPort: 0, tcpPort: 0, udpPort: 0, pids: new Map<string, number>(), lines: 0, errors: [] as string[] };
  let partial = '';
  daemon.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop()!;
    for (const line of parts) {
      state.lines++;
      const up = /listener (soak-\w+) up .*address=\S+:(\d+) .*pid=(\d+)/.exec(line);
      if (up) {
        if (up[1] === 'soak-tcp') state.tcpPort = Number(up[2]);
        else state.udpPort = Number(up[2]);
        state.pids.set(up[1]!, Number(up[3]));
      }
      const metrics = /metrics server started address=\S+:(\d+)/.exec(line);
      if (metrics) state.metricsPort = Number(metrics[1]);
      if (/internal error/.test(line)) state.errors.push(line);
    }
  });
  for (let i = 0; i < 300 && !(state.tcpPort && state.udpPort && state.metricsPort); i++) await delay(100);
  if (!(state.tcpPort && state.udpPort && state.metricsPort)) throw new Error(`the daemon did not come up: ${stderr}`);

  // Load: TCP at a fixed rate (each a connect, 1 KiB echoed, close); UDP request/response on 20 sessions.
  const latencies: number[] = [];
  let tcpDone = 0;
  let tcpFailed = 0;
  let udpDone = 0;
  const payload = Buffer.alloc(1024, 0x61);
  const tcpOnce = (): void => {
    const started = performance.now();
    const socket = net.connect(state.tcpPort, '127.0.0.1');
    let got = 0;
    const fail = (): void => {
      tcpFailed++;
      socket.destroy();
    };
    const timer = setTimeout(fail, 10_000);
    socket.on('error', () => {
      clearTimeout(timer);
      fail();
    });
    socket.on('connect', () => socket.write(payload));
    socket.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= payload.length) {
        clearTimeout(timer);
        latencies.push(performance.now() - started);
        tcpDone++;
        socket.end();
      }
    });
  };
  const tcpTimer = setInterval(() => {
    for (let i = 0; i < options.tcpRate / 20; i++) tcpOnce();
  }, 50);
  cleanups.push(() => clearInterval(tcpTimer));
  const udpClients = await Promise.all(Array.from({ length: 20 }, async () => {
    const socket = dgram.createSocket('udp4');
    socket.on('error', () => {});
    socket.on('message', () => udpDone++);
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    return socket;
  }));
  cleanups.push(() => udpClients.forEach((s) => s.close()));
  const udpTimer = setInterval(() => {
    for (let i = 0; i < options.udpRate / 20; i++) udpClients[i % udpClients.length]!.send('ping', state.udpPort, '127.0.0.1');
  }, 50);
  cleanups.push(() => clearInterval(udpTimer));

  // Disturbances: reloads of the TCP listener, SIGKILLs of the UDP child.
  let reloads = 0;
  let kills = 0;
  const reloadTimer = setInterval(() => {
    writeFileSync(join(dir, 'conf.d', 'soak-tcp.yaml'), tcpFile(reloads++ % 2 === 0 ? '6m' : '5m'));
  }, options.reloadEvery * 1000);
  cleanups.push(() => clearInterval(reloadTimer));
  const killTimer = setInterval(() => {
    const pid = state.pids.get('soak-udp');
    if (pid !== undefined && alive(pid)) {
      process.kill(pid, 'SIGKILL');
      kills++;
    }
  }, options.killEvery * 1000);
  cleanups.push(() => clearInterval(killTimer));

  const scrape = async (): Promise<Map<string, number>> => {
    const out = new Map<string, number>();
    const text = await (await fetch(`http://127.0.0.1:${state.metricsPort}/metrics`)).text();
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      const at = line.lastIndexOf(' ');
      out.set(line.slice(0, at), Number(line.slice(at + 1)));
    }
    return out;
  };

  interface Row { t: number; supRss: number; childRss: number; supFds: number; childFds: number; loopP99: number; latP50: number; latP99: number; tcpPerS: number; udpPerS: number; failed: number }
  const rows: Row[] = [];
  const started = performance.now();
  const endAt = started + options.minutes * 60_000;
  console.log(`soak: ${options.minutes} min, a row every ${options.sample} s; TCP ${options.tcpRate}/s, UDP ${options.udpRate}/s, reload every ${options.reloadEvery} s, UDP child killed every ${options.killEvery} s`);
  console.log('   t(s)  sup RSS  child RSS  sup fds  child fds  loop p99  lat p50  lat p99   tcp/s   udp/s  failed  reloads kills');
  let lastTcp = 0;
  let lastUdp = 0;
  while (performance.now() < endAt) {
    await delay(options.sample * 1000);
    const metrics = await scrape().catch(() => new Map<string, number>());
    const children = [...state.pids.values()].filter(alive);
    const row: Row = {
      t: (performance.now() - started) / 1000,
      supRss: rss(daemonPid),
      childRss: children.reduce((a, pid) => a + rss(pid), 0),
      supFds: fds(daemonPid),
      childFds: children.reduce((a, pid) => a + fds(pid), 0),
      loopP99: (metrics.get('nodejs_eventloop_lag_p99_seconds') ?? 0) * 1000,
      latP50: percentile(latencies, 0.5),
      latP99: percentile(latencies.splice(0), 0.99),
      tcpPerS: (tcpDone - lastTcp) / options.sample,
      udpPerS: (udpDone - lastUdp) / options.sample,
      failed: tcpFailed,
    };
    lastTcp = tcpDone;
    lastUdp = udpDone;
    rows.push(row);
    const mb = (b: number): string => `${(b / 1048576).toFixed(1)}M`;
    console.log(`${row.t.toFixed(0).padStart(7)} ${mb(row.supRss).padStart(8)} ${mb(row.childRss).padStart(10)} ${String(row.supFds).padStart(8)} ${String(row.childFds).padStart(10)} ${row.loopP99.toFixed(1).padStart(7)}ms ${row.latP50.toFixed(1).padStart(6)}ms ${row.latP99.toFixed(1).padStart(6)}ms ${row.tcpPerS.toFixed(0).padStart(7)} ${row.udpPerS.toFixed(0).padStart(7)} ${String(row.failed).padStart(7)} ${String(reloads).padStart(8)} ${String(kills).padStart(5)}`);
    if (!alive(daemonPid)) throw new Error(`the daemon died: ${stderr}`);
  }

  // Verdict: slopes over the run after warm-up, extrapolated over its length.
  const steady = rows.slice(Math.floor(rows.length * 0.2));
  if (steady.length < 3) throw new Error('too few samples for a verdict: run longer or sample more often');
  const xs = steady.map((r) => r.t);
  const span = xs[xs.length - 1]! - xs[0]!;
  const mean = (f: (r: Row) => number): number => steady.reduce((a, r) => a + f(r), 0) / steady.length;
  const checks: Array<[string, (r: Row) => number, (drift: number, m: number) => boolean, string]> = [
    ['supervisor RSS', (r) => r.supRss, (d, m) => Math.abs(d) < Math.max(10 * 1048576, 0.1 * m), 'MiB'],
    ['children RSS', (r) => r.childRss, (d, m) => Math.abs(d) < Math.max(10 * 1048576, 0.1 * m), 'MiB'],
    ['supervisor fds', (r) => r.supFds, (d, m) => Math.abs(d) < Math.max(10, 0.2 * m), ''],
    ['children fds', (r) => r.childFds, (d, m) => Math.abs(d) < Math.max(10, 0.2 * m), ''],
    ['event-loop delay p99', (r) => r.loopP99, (d) => Math.abs(d) < 10, 'ms'],
    ['latency p50', (r) => r.latP50, (d, m) => Math.abs(d) < Math.max(10, 0.5 * m), 'ms'],
    ['TCP throughput', (r) => r.tcpPerS, (d, m) => Math.abs(d) < 0.1 * m, '/s'],
    ['UDP throughput', (r) => r.udpPerS, (d, m) => Math.abs(d) < 0.1 * m, '/s'],
  ];
  let failed = 0;
  console.log(`\nverdict over ${steady.length} samples (${span.toFixed(0)} s after warm-up): drift = slope × span`);
  for (const [name, f, ok, unit] of checks) {
    const m = mean(f);
    const drift = slope(xs, steady.map(f)) * span;
    const scale = unit === 'MiB' ? 1048576 : 1;
    const pass = ok(drift, m);
    if (!pass) failed++;
    console.log(`  ${pass ? 'ok  ' : 'FAIL'} ${name.padEnd(22)} mean ${(m / scale).toFixed(1)}${unit}  drift ${(drift / scale).toFixed(2)}${unit}`);
  }
  console.log(`  ${tcpDone} TCP round trips (${tcpFailed} failed), ${udpDone} UDP replies, ${reloads} reloads, ${kills} child kills, ${state.lines} log lines${state.errors.length ? `, ${state.errors.length} internal errors` : ''}`);
  if (state.errors.length > 0) failed++;
  process.exitCode = failed === 0 ? 0 : 1;
  console.log(failed === 0 ? 'soak passed' : `soak failed: ${failed} check(s)`);
}

main().catch((error: unknown) => {
  console.error(`soak: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
