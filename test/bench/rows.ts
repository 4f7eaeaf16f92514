/**
 * What each row measures, one run of one cell at a time. Every run is bounded in time (the tools'
 * own duration plus a kill timer) and talks to 127.0.0.1 only.
 */
import net from 'node:net';
import type { HoldServer } from './backends.js';
import { run, rssBytes, sleep, waitFor, type Cores } from './procs.js';
import type { Proto, Running } from './targets.js';
import type { Tools } from './tools.js';

export type BackendKind = 'iperf' | 'http' | 'udp' | 'hold';

export interface Sample {
  /** NaN when the run failed. */
  readonly value: number;
  readonly extra?: Readonly<Record<string, number>>;
  readonly note?: string;
}

export interface RunContext {
  readonly tools: Tools;
  readonly loadCore: Cores;
  /** Threads (wrk) or processes (the UDP client) the load runs in; default 1. */
  readonly loadThreads?: number;
  /**
   * The environment that makes a load generator connect from many source addresses (the
   * LD_PRELOAD shim of c/many-sources.c), or undefined: all from 127.0.0.1.
   */
  readonly loadEnv?: Readonly<Record<string, string>>;
  /** Seconds per run. */
  readonly seconds: number;
  /** Idle connections opened by the memory row. */
  readonly idleConnections: number;
  readonly hold?: HoldServer;
}

export interface Row {
  readonly id: string;
  readonly title: string;
  readonly unit: string;
  readonly proto: Proto;
  readonly backend: BackendKind;
  /** Lower is better (memory). */
  readonly lowerIsBetter?: boolean;
  /** Each run on a newly started proxy process. */
  readonly freshProcess?: boolean;
  /** Operations in a run of `seconds` measuring `value` (for the proxy's CPU µs per operation). */
  readonly perOp?: (value: number, seconds: number) => number;
  readonly opName?: string;
  /** Only these targets (ids); all when absent. */
  readonly only?: readonly string[];
  /** Needs tools; returns why it cannot run, or null. */
  unavailable(tools: Tools): string | null;
  measure(target: Running, ctx: RunContext): Promise<Sample>;
}

// ---- TCP throughput (iperf3) -------------------------------------------------------------------

function iperfRow(streams: number, reverse: boolean): Row {
  return {
    id: `tcp${streams}-${reverse ? 'down' : 'up'}`,
    title: `TCP ${streams} stream${streams > 1 ? 's' : ''}, ${reverse ? 'target → client' : 'client → target'}`,
    unit: 'Gbit/s',
    proto: 'tcp',
    backend: 'iperf',
    // Per MB moved (iperf3 runs whole seconds).
    perOp: (value, seconds) => (value * 1e9 / 8 / 1e6) * Math.max(1, Math.round(seconds)),
    opName: 'MB',
    unavailable: (tools) => (tools.iperf3 === null ? 'iperf3 missing' : null),
    async measure(target, ctx) {
      const args = ['-c', '127.0.0.1', '-p', String(target.port), '-t', String(Math.max(1, Math.round(ctx.seconds))), '-P', String(streams), '-J', '--connect-timeout', '3000'];
      if (reverse) args.push('-R');
      const r = await run('iperf3', ctx.tools.iperf3!, args, { core: ctx.loadCore, env: { ...ctx.loadEnv }, timeoutMs: ctx.seconds * 1000 + 15_000 });
      try {
        const json = JSON.parse(r.out) as { error?: string; end?: { sum_received?: { bits_per_second?: number } } };
        if (json.error !== undefined) return { value: NaN, note: json.error };
        return { value: (json.end?.sum_received?.bits_per_second ?? NaN) / 1e9 };
      } catch {
        return { value: NaN, note: `iperf3 output unreadable (exit ${r.code}): ${r.err.slice(0, 200)}` };
      }
    },
  };
}

// ---- HTTP (wrk) --------------------------------------------------------------------------------

interface WrkResult {
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly errors: number;
  readonly connectErrors: number;
}

function toMs(value: string, unit: string): number {
  const n = Number(value);
  return unit === 'us' ? n / 1000 : unit === 's' ? n * 1000 : unit === 'm' ? n * 60_000 : n;
}

export function parseWrk(out: string): WrkResult | null {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (rps === null) return null;
  const pct = (p: string): number => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(out);
    return m ? toMs(m[1]!, m[2]!) : NaN;
  };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const connectErrors = sock ? Number(sock[1]) : 0;
  const errors = (sock ? Number(sock[1]) + Number(sock[2]) + Number(sock[3]) + Number(sock[4]) : 0) + (non2xx ? Number(non2xx[1]) : 0);
  return { rps: Number(rps[1]), p50: pct('50'), p99: pct('99'), errors, connectErrors };
}

async function wrk(port: number, ctx: RunContext, connections: number, close: boolean, seconds: number): Promise<Sample> {
  const args = ['-t', String(ctx.loadThreads ?? 1), '-c', String(connections), '-d', `${seconds}s`, '--latency', '--timeout', '5s'];
  if (close) args.push('-H', 'Connection: close');
  args.push(`http://127.0.0.1:${port}/`);
  const r = await run('wrk', ctx.tools.wrk!, args, { core: ctx.loadCore, env: { ...ctx.loadEnv }, timeoutMs: seconds * 1000 + 15_000 });
  const result = parseWrk(r.out);
  if (result === null) return { value: NaN, note: `wrk failed: ${r.err.slice(0, 200)}` };
  return { value: result.rps, extra: { p50_ms: result.p50, p99_ms: result.p99, errors: result.errors, refused: result.connectErrors } };
}

const httpKeepAlive: Row = {
  id: 'http-ka',
  title: 'HTTP keep-alive, 32 connections',
  unit: 'req/s',
  proto: 'tcp',
  backend: 'http',
  perOp: (value, seconds) => value * Math.max(1, Math.round(seconds)),
  opName: 'request',
  unavailable: (tools) => (tools.wrk === null ? 'wrk missing' : null),
  measure: (target, ctx) => wrk(target.port, ctx, 32, false, Math.max(1, Math.round(ctx.seconds))),
};

const httpNewConnections: Row = {
  id: 'http-new',
  title: 'HTTP new connection per request, 32 at once',
  unit: 'conn/s',
  proto: 'tcp',
  backend: 'http',
  perOp: (value, seconds) => value * Math.max(1, Math.round(seconds)),
  opName: 'connection',
  unavailable: (tools) => (tools.wrk === null ? 'wrk missing' : null),
  measure: (target, ctx) => wrk(target.port, ctx, 32, true, Math.max(1, Math.round(ctx.seconds))),
};

/** New connections while the listener's file is rewritten about every 700 ms. */
const reloadUnderLoad: Row = {
  id: 'reload',
  title: 'HTTP new connections while the listener file is rewritten',
  unit: 'conn/s',
  proto: 'tcp',
  backend: 'http',
  only: ['direct', 'pp-off', 'pp-on', 'pp-shared', 'pp-off@base', 'pp-on@base'],
  unavailable: (tools) => (tools.wrk === null ? 'wrk missing' : null),
  async measure(target, ctx) {
    const seconds = Math.max(3, Math.round(ctx.seconds * 1.5));
    const load = wrk(target.port, ctx, 32, true, seconds);
    let reloads = 0;
    let failure: string | undefined;
    if (target.reload !== undefined) {
      const until = Date.now() + seconds * 1000 - 800;
      await sleep(300);
      try {
        while (Date.now() < until) {
          await target.reload();
          reloads++;
          await sleep(700);
        }
      } catch (err) {
        failure = (err as Error).message;
      }
    }
    const sample = await load; // bounded by wrk's own duration
    return { ...sample, extra: { ...sample.extra, reloads }, ...(failure !== undefined ? { note: failure } : {}) };
  },
};

// ---- UDP (C client) ----------------------------------------------------------------------------

function udpRow(sessions: number): Row {
  return {
    id: `udp${sessions}`,
    title: `UDP request/response, ${sessions.toLocaleString('en-US')} sessions`,
    unit: 'replies/s',
    proto: 'udp',
    backend: 'udp',
    perOp: (value, seconds) => value * seconds,
    opName: 'reply',
    unavailable: (tools) => (tools.udpClient === null || tools.udpEcho === null ? 'C client not built' : null),
    async measure(target, ctx) {
      const ms = Math.round(ctx.seconds * 1000);
      // Several clients share the sessions, each from source addresses of its own.
      const clients = ctx.loadThreads ?? 1;
      const runs = await Promise.all(Array.from({ length: clients }, (_, i) => {
        const share = Math.floor(sessions / clients) + (i < sessions % clients ? 1 : 0);
        const args = ['127.0.0.1', String(target.port), String(share), String(ms), '500', '100', '200'];
        const env = { ...ctx.loadEnv, ...(ctx.loadEnv !== undefined ? { PP_BENCH_SOURCE_FIRST: String(i * sessions) } : {}) };
        return run('udp-client', ctx.tools.udpClient!, args, { core: ctx.loadCore, env, timeoutMs: ms + 15_000 });
      }));
      let rate = 0;
      let lost = 0;
      for (const r of runs) {
        try {
          const json = JSON.parse(r.out) as { rate: number; loss: number };
          rate += json.rate;
          lost += json.loss * json.rate;
        } catch {
          return { value: NaN, note: `udp-client failed: ${r.err.slice(0, 200)}` };
        }
      }
      return { value: rate, extra: { loss_pct: rate > 0 ? (lost / rate) * 100 : NaN } };
    },
  };
}

// ---- Idle memory -------------------------------------------------------------------------------

async function rssMedian(target: Running): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < 5; i++) {
    samples.push(rssBytes(target.pids()));
    await sleep(100);
  }
  return samples.sort((a, b) => a - b)[2]!;
}

/** Opens n connections through the target, one ping/pong each, then holds them. */
async function openIdle(port: number, n: number, hold: HoldServer): Promise<net.Socket[]> {
  const sockets: net.Socket[] = [];
  const batch = 100;
  for (let i = 0; i < n; i += batch) {
    await Promise.all(Array.from({ length: Math.min(batch, n - i) }, () => new Promise<void>((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1');
      sockets.push(socket);
      const timer = setTimeout(() => reject(new Error('idle connection: no pong within 20 s')), 20_000);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once('connect', () => socket.write('ping'));
      socket.once('data', () => {
        clearTimeout(timer);
        resolve();
      });
    })));
  }
  await waitFor(() => hold.accepted() >= n || undefined, 'the hold server to see every connection');
  return sockets;
}

const idleMemory: Row = {
  id: 'rss',
  title: 'Memory per idle connection (RSS growth / connections)',
  unit: 'KB/conn',
  proto: 'tcp',
  backend: 'hold',
  lowerIsBetter: true,
  freshProcess: true,
  only: ['node', 'pp-off', 'pp-on', 'pp-shared', 'haproxy', 'nginx', 'pp-off@base', 'pp-on@base'],
  unavailable: () => null,
  async measure(target, ctx) {
    const hold = ctx.hold!;
    const pids = target.pids();
    if (pids.length === 0) return { value: NaN, note: 'no proxy process' };
    // Warm the proxy up with a few connections first (first-use allocations, JIT), then take the
    // baseline as the median of a few samples: a Node process's RSS moves with its GC.
    await openIdle(target.port, 20, hold).then((s) => s.forEach((x) => x.destroy()), () => {});
    await sleep(500);
    const before = await rssMedian(target);
    const base = hold.accepted();
    let sockets: net.Socket[] = [];
    try {
      sockets = await openIdle(target.port, ctx.idleConnections, { ...hold, accepted: () => hold.accepted() - base });
      await sleep(500); // let the proxy settle (batched reports, lazy allocations)
      const after = await rssMedian(target);
      return { value: (after - before) / ctx.idleConnections / 1024, extra: { rss_mb: after / 1048576 } };
    } catch (err) {
      return { value: NaN, note: (err as Error).message };
    } finally {
      for (const s of sockets) s.destroy();
      hold.closeAll();
      await sleep(500);
    }
  },
};

export const ROWS: readonly Row[] = [
  iperfRow(1, false), iperfRow(1, true), iperfRow(8, false), iperfRow(8, true),
  httpKeepAlive, httpNewConnections,
  udpRow(64), udpRow(1000),
  idleMemory,
  reloadUnderLoad,
];
