/** Medians, ranges, ratios to direct, and the markdown the benchmark prints and writes. */
import type { Row, Sample } from './rows.js';
import type { Target } from './targets.js';

export interface Cell {
  readonly samples: Sample[];
  /** Why the cell was not measured, when it was not. */
  skipped?: string;
}

export type Results = Map<string, Map<string, Cell>>; // row id → target id → cell

export function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

function finite(cell: Cell | undefined): number[] {
  return (cell?.samples ?? []).map((s) => s.value).filter((x) => Number.isFinite(x));
}

export function cellMedian(cell: Cell | undefined): number {
  return median(finite(cell));
}

function extraMedian(cell: Cell | undefined, key: string): number {
  return median((cell?.samples ?? []).map((s) => s.extra?.[key] ?? NaN));
}

/**
 * What features cost in CPU per operation: the median over rounds of on/off − 1, each round's two
 * runs compared with each other (samples are kept in round order).
 */
function pairedCost(on: Cell | undefined, off: Cell | undefined): number {
  const a = on?.samples ?? [];
  const b = off?.samples ?? [];
  const ratios: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i]!.extra?.['cpu_us_op'] ?? NaN;
    const y = b[i]!.extra?.['cpu_us_op'] ?? NaN;
    if (Number.isFinite(x) && Number.isFinite(y) && y > 0) ratios.push(x / y - 1);
  }
  return median(ratios);
}

function extraMax(cell: Cell | undefined, key: string): number {
  const v = (cell?.samples ?? []).map((s) => s.extra?.[key] ?? NaN).filter((x) => Number.isFinite(x));
  return v.length === 0 ? NaN : Math.max(...v);
}

export function fmt(value: number): string {
  if (!Number.isFinite(value)) return '–';
  const abs = Math.abs(value);
  if (abs >= 1000) return Math.round(value).toLocaleString('en-US');
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

export function ratio(row: Row, results: Results, targetId: string): number {
  if (row.lowerIsBetter === true) return NaN;
  const cells = results.get(row.id);
  return cellMedian(cells?.get(targetId)) / cellMedian(cells?.get('direct'));
}

/** The goals of issue 9, as ×direct with features on (memory: KB per idle connection). */
export const GOALS: Readonly<Record<string, number>> = {
  'tcp1-up': 0.65, 'tcp1-down': 0.65, 'tcp8-up': 0.45, 'tcp8-down': 0.45,
  'http-ka': 0.77, 'http-new': 0.35, udp64: 0.6, udp1000: 0.5, rss: 20,
};

/** Issue 23's goals for workers 2 on two cores, as × the one-worker figure of the same run. */
export const WORKER_GOALS: Readonly<Record<string, number>> = { 'http-new': 1.6, udp1000: 1.6 };

/**
 * The two-core run: what workers 2 gives over workers 1 in the same run (features off and on), and
 * where PacketPony with 2 workers stands against HAProxy and nginx with 2 threads or workers.
 */
function workersSection(rows: readonly Row[], targets: readonly Target[], results: Results): string[] {
  if (!targets.some((t) => t.id === 'pp-on-w2')) return [];
  const has = (id: string): boolean => targets.some((t) => t.id === id);
  // What a second thread or worker gives HAProxy and nginx in the same run: the machine's own
  // scaling, against which PacketPony's is read.
  const controls = [['haproxy', 'haproxy-1', 'HAProxy 2 threads / 1'], ['nginx', 'nginx-1', 'nginx 2 workers / 1']].filter(([a, b]) => has(a!) && has(b!));
  const others = targets.filter((t) => t.id === 'haproxy' || t.id === 'nginx');
  const out = ['', '## Workers: 2 against 1 on two cores, and against HAProxy and nginx', ''];
  out.push(`| Row | goal | off: 2 workers / 1 | on: 2 workers / 1 | met | ${[...controls.map((c) => c[2]!), ...others.map((t) => `on, 2 workers / ${t.label} (2)`)].join(' | ')} |`);
  out.push(`|---|---:|---:|---:|:--:|${[...controls, ...others].map(() => '---:').join('|')}|`);
  for (const row of rows) {
    const cells = results.get(row.id);
    if (cells === undefined) continue;
    const over = (a: string, b: string): number => cellMedian(cells.get(a)) / cellMedian(cells.get(b));
    const on = over('pp-on-w2', 'pp-on');
    const goal = WORKER_GOALS[row.id];
    const met = goal === undefined || !Number.isFinite(on) ? '' : on >= goal ? 'yes' : 'no';
    const show = (v: number): string => (Number.isFinite(v) ? `×${v.toFixed(2)}` : '–');
    const columns = [...controls.map(([a, b]) => show(over(a!, b!))), ...others.map((t) => show(over('pp-on-w2', t.id)))];
    out.push(`| ${row.title} | ${goal === undefined ? '' : `≥ ×${goal}`} | ${show(over('pp-off-w2', 'pp-off'))} | ${show(on)} | ${met} | ${columns.join(' | ')} |`);
  }
  return out;
}

export interface Meta {
  readonly date: string;
  readonly machine: string;
  readonly settings: string;
  readonly notes: readonly string[];
}

function extrasText(row: Row, cell: Cell | undefined): string {
  if (cell === undefined) return '';
  const parts: string[] = [];
  if (row.backend === 'http') {
    parts.push(`p50 ${fmt(extraMedian(cell, 'p50_ms'))} ms, p99 ${fmt(extraMedian(cell, 'p99_ms'))} ms`);
    const errors = extraMax(cell, 'errors');
    if (Number.isFinite(errors)) parts.push(`errors ≤ ${errors}`);
  }
  if (row.id === 'reload') {
    parts.push(`refused ≤ ${fmt(extraMax(cell, 'refused'))}`, `reloads ${fmt(extraMedian(cell, 'reloads'))}/run`);
  }
  if (row.backend === 'udp') parts.push(`loss ${fmt(extraMedian(cell, 'loss_pct'))} % (max ${fmt(extraMax(cell, 'loss_pct'))} %)`);
  const cpu = extraMedian(cell, 'cpu_pct');
  if (Number.isFinite(cpu)) {
    const perOp = extraMedian(cell, 'cpu_us_op');
    const root = extraMedian(cell, 'cpu_root_pct');
    parts.push(`proxy CPU ${cpu.toFixed(0)} %${Number.isFinite(perOp) ? `, ${fmt(perOp)} µs/${row.opName ?? 'op'}` : ''}${Number.isFinite(root) ? ` (${root.toFixed(0)} % in the first process)` : ''}`);
  }
  const foreign = extraMedian(cell, 'foreign_pct');
  if (Number.isFinite(foreign) && cell.samples.length > 0 && row.id !== 'rss') parts.push(`other load ${foreign.toFixed(0)} %`);
  const loadCore = extraMedian(cell, 'load_core_pct');
  if (Number.isFinite(loadCore) && row.id !== 'rss') parts.push(`load core ${loadCore.toFixed(0)} %`);
  if (row.id === 'rss') parts.push(`RSS ${fmt(extraMedian(cell, 'rss_mb'))} MB with the connections open`);
  const notes = [...new Set((cell.samples ?? []).map((s) => s.note).filter((n): n is string => n !== undefined))];
  if (notes.length > 0) parts.push(`failed: ${notes.join('; ').slice(0, 160)}`);
  return parts.join('; ');
}

/** The load core's busy share at or above which the load side, not the proxy, sets a rate. */
export const SATURATED_LOAD_PCT = 95;

/**
 * For a missed goal: when the core running the clients and backends was saturated during
 * PacketPony's runs, the rate was the load side's ceiling, so say so, with the other proxies'
 * ratios and load in the same run to judge against. null when the load core had room.
 */
function saturatedLoadNote(row: Row, targets: readonly Target[], results: Results): string | null {
  const cells = results.get(row.id);
  const load = extraMedian(cells?.get('pp-on'), 'load_core_pct');
  if (!(load >= SATURATED_LOAD_PCT)) return null;
  const others = targets
    .filter((t) => t.id !== 'direct' && t.id !== 'pp-on' && cells?.get(t.id)?.skipped === undefined && Number.isFinite(ratio(row, results, t.id)))
    .map((t) => `${t.label} ×${ratio(row, results, t.id).toFixed(2)} (load core ${extraMedian(cells?.get(t.id), 'load_core_pct').toFixed(0)} %)`);
  return (
    `${row.title}: the load core (clients and backends) was ${load.toFixed(0)} % busy during PacketPony's runs, so the load side set this rate as much as the proxy did. ` +
    `In the same run: PacketPony ×${ratio(row, results, 'pp-on').toFixed(2)}${others.length > 0 ? `, ${others.join(', ')}` : ''}.`
  );
}

/** Issue 9's goals (×direct, features on, one core per proxy), and what features cost. */
function goalsSection(out: string[], rows: readonly Row[], targets: readonly Target[], results: Results): void {
  out.push('', '## Goals (PacketPony, features on)', '');
  // Two views of what features cost: the CPU each operation took, on against off in the same round
  // (the two runs are minutes apart at most, so the machine's drift mostly cancels), which is what
  // the features add; and the medians of the rates, which that drift moves by ±30 %.
  out.push('| Row | goal | features on | met | features off | cost of features, CPU per operation (paired by round) | cost of features, median rates |', '|---|---:|---:|:--:|---:|---:|---:|');
  const missed: Row[] = [];
  for (const row of rows) {
    const cells = results.get(row.id);
    const goal = GOALS[row.id];
    if (cells === undefined || goal === undefined) continue;
    const on = cellMedian(cells.get('pp-on'));
    const off = cellMedian(cells.get('pp-off'));
    const value = row.lowerIsBetter === true ? on : ratio(row, results, 'pp-on');
    const offValue = row.lowerIsBetter === true ? off : ratio(row, results, 'pp-off');
    const met = !Number.isFinite(value) ? '?' : row.lowerIsBetter === true ? (value <= goal ? 'yes' : 'no') : value >= goal ? 'yes' : 'no';
    // Memory: the difference in KB per connection (a ratio of two small, noisy figures says little).
    const cost = row.lowerIsBetter === true ? on - off : 1 - on / off;
    const goalText = row.lowerIsBetter === true ? `≤ ${goal} ${row.unit}` : `≥ ×${goal}`;
    const show = (v: number): string => (row.lowerIsBetter === true ? fmt(v) : Number.isFinite(v) ? `×${v.toFixed(2)}` : '–');
    const costText = !Number.isFinite(cost) ? '–' : row.lowerIsBetter === true ? `${cost >= 0 ? '+' : ''}${cost.toFixed(1)} ${row.unit}` : `${(cost * 100).toFixed(1)} %`;
    const cpuCost = pairedCost(cells.get('pp-on'), cells.get('pp-off'));
    const cpuText = Number.isFinite(cpuCost) ? `${cpuCost >= 0 ? '+' : ''}${(cpuCost * 100).toFixed(1)} %` : '–';
    out.push(`| ${row.title} | ${goalText} | ${show(value)} | ${met} | ${show(offValue)} | ${cpuText} | ${costText} |`);
    if (met === 'no') missed.push(row);
  }
  for (const row of missed) {
    const line = saturatedLoadNote(row, targets, results);
    if (line !== null) out.push('', line);
  }
}

export function markdown(rows: readonly Row[], targets: readonly Target[], results: Results, meta: Meta): string {
  const out: string[] = [];
  out.push(`# PacketPony benchmark, ${meta.date}`, '', `Machine: ${meta.machine}`, '', meta.settings, '');
  out.push('## Summary: median, ×direct (the ratio to no proxy in the same run)', '');
  out.push(`| Row | unit | ${targets.map((t) => t.label).join(' | ')} |`);
  out.push(`|---|---|${targets.map(() => '---:').join('|')}|`);
  for (const row of rows) {
    const cells = results.get(row.id);
    if (cells === undefined) continue;
    const tds = targets.map((t) => {
      const cell = cells.get(t.id);
      if (cell === undefined || cell.skipped !== undefined) return '–';
      const m = cellMedian(cell);
      const r = ratio(row, results, t.id);
      return t.id === 'direct' || !Number.isFinite(r) ? fmt(m) : `${fmt(m)} ×${r.toFixed(2)}`;
    });
    out.push(`| ${row.title} | ${row.unit} | ${tds.join(' | ')} |`);
  }
  // Issue 9's goals are for one pinned core per proxy: the two-core run has its own (workersSection).
  const twoCores = targets.some((t) => t.id === 'pp-on-w2');
  if (!twoCores) goalsSection(out, rows, targets, results);
  const reload = results.get('reload');
  if (reload !== undefined) {
    for (const id of ['pp-off', 'pp-on']) {
      const cell = reload.get(id);
      if (cell === undefined || cell.skipped !== undefined) continue;
      out.push('', `Reload under load, ${id === 'pp-on' ? 'features on' : 'features off'}: refused connections, worst run: ${fmt(extraMax(cell, 'refused'))} (must be 0); other errors, worst run: ${fmt(extraMax(cell, 'errors'))}.`);
    }
  }
  out.push(...workersSection(rows, targets, results));
  out.push('', '## Details', '', '| Row | target | median | min–max | ×direct | runs | more |', '|---|---|---:|---:|---:|---:|---|');
  for (const row of rows) {
    const cells = results.get(row.id);
    if (cells === undefined) continue;
    for (const t of targets) {
      const cell = cells.get(t.id);
      if (cell === undefined) continue;
      if (cell.skipped !== undefined) {
        out.push(`| ${row.title} | ${t.label} | – | – | – | 0 | ${cell.skipped} |`);
        continue;
      }
      const v = finite(cell);
      const r = ratio(row, results, t.id);
      const range = v.length === 0 ? '–' : `${fmt(Math.min(...v))}–${fmt(Math.max(...v))}`;
      out.push(`| ${row.title} | ${t.label} | ${fmt(median(v))} ${row.unit} | ${range} | ${Number.isFinite(r) ? r.toFixed(2) : '–'} | ${v.length}/${cell.samples.length} | ${extrasText(row, cell)} |`);
    }
  }
  if (meta.notes.length > 0) out.push('', '## Notes', '', ...meta.notes.map((n) => `- ${n}`));
  return out.join('\n') + '\n';
}
