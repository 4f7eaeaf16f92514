/**
 * A Prometheus histogram fed with counts that are already bucketed.
 *
 * The children sort finished connections into DURATION_BUCKETS themselves (a few integer
 * increments, no allocation) and report per-bucket counts, sum and count every 200 ms. prom-client's
 * Histogram only takes single observations, and replaying each connection as one would lose its
 * exact duration in the sum; so this small collector keeps the counts and writes the same
 * exposition a prom-client Histogram does (`_bucket{le}` cumulative, `_sum`, `_count`).
 */
import type { Metric, Registry } from 'prom-client';

interface Series {
  readonly labels: Readonly<Record<string, string>>;
  /** Per bucket, not cumulative; one more slot than bounds for the overflow (+Inf). */
  readonly counts: number[];
  sum: number;
  count: number;
}

interface ExportedValue {
  readonly metricName: string;
  readonly labels: Record<string, string | number>;
  readonly value: number;
}

export interface BucketedHistogramOptions<L extends string> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly L[];
  /** Upper bounds, ascending. */
  readonly buckets: readonly number[];
  readonly registry: Registry;
}

export class BucketedHistogram<L extends string> {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly labelNames: readonly L[];
  readonly #bounds: readonly number[];
  #series = new Map<string, Series>();

  constructor(options: BucketedHistogramOptions<L>) {
    this.name = options.name;
    this.help = options.help;
    this.labelNames = options.labelNames;
    this.#bounds = options.buckets;
    // The registry takes anything with name, help, type, get() and reset(); its type declaration
    // only lists prom-client's own classes, hence the cast.
    options.registry.registerMetric(this as unknown as Metric);
  }

  #get(labels: Readonly<Record<L, string>>): Series {
    const key = this.labelNames.map((name) => labels[name]).join('\u0000');
    let series = this.#series.get(key);
    if (!series) {
      series = { labels: { ...labels }, counts: new Array<number>(this.#bounds.length + 1).fill(0), sum: 0, count: 0 };
      this.#series.set(key, series);
    }
    return series;
  }

  /** Makes the series exist with zero counts, so it is scraped before the first observation. */
  zero(labels: Readonly<Record<L, string>>): void {
    this.#get(labels);
  }

  /** Adds per-bucket counts (length bounds + 1, the last for the overflow), their sum and count. */
  add(labels: Readonly<Record<L, string>>, counts: readonly number[], sum: number, count: number): void {
    if (count === 0) return;
    const series = this.#get(labels);
    const n = Math.min(counts.length, series.counts.length);
    for (let i = 0; i < n; i++) series.counts[i]! += counts[i]!;
    series.sum += sum;
    series.count += count;
  }

  reset(): void {
    this.#series = new Map();
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: ExportedValue[] }> {
    const values: ExportedValue[] = [];
    for (const series of this.#series.values()) {
      let cumulative = 0;
      for (let i = 0; i < this.#bounds.length; i++) {
        cumulative += series.counts[i]!;
        values.push({ metricName: `${this.name}_bucket`, labels: { ...series.labels, le: this.#bounds[i]! }, value: cumulative });
      }
      cumulative += series.counts[this.#bounds.length]!;
      values.push({ metricName: `${this.name}_bucket`, labels: { ...series.labels, le: '+Inf' }, value: cumulative });
      values.push({ metricName: `${this.name}_sum`, labels: { ...series.labels }, value: series.sum });
      values.push({ metricName: `${this.name}_count`, labels: { ...series.labels }, value: series.count });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}
