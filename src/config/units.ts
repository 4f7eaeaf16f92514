/**
 * The one place where durations and sizes written by users are turned into numbers.
 *
 * Durations use Go's syntax, as the original does: a sequence of decimal numbers each with a unit,
 * `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h` — "500ms", "30s", "1m30s", "1.5h"; "0" alone is zero.
 * They become milliseconds (fractions of a millisecond are kept as fractions), at most
 * MAX_DURATION_MS: longer ones count as that.
 *
 * Sizes are a decimal number and a unit, case-insensitive, optional space between: B, KB, MB, GB,
 * TB — 1024-based like the original (1MB = 1,048,576 bytes) — and KiB, MiB, GiB, TiB with the same
 * meaning. They become whole bytes (rounded down). A bare 0 means zero (off).
 */

const DURATION_UNITS_MS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** Matches a whole Go duration; the schema's `pattern` for durations is the same expression. */
export const DURATION_PATTERN = '^(0|([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)(([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))*)$';
const DURATION_RE = new RegExp(DURATION_PATTERN);
const DURATION_PART_RE = /([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)/g;

/**
 * The longest duration used: 2^31−1 ms, about 24.8 days, the longest delay node's timers take.
 * Beyond it a timer fires after 1 ms instead (with a TimeoutOverflowWarning), so an idle_timeout of
 * "720h" would cut every connection at once and a connect_timeout of "1000h" fail every dial; the
 * config fuzzer found them. The original (Go) takes longer durations, so they are not rejected:
 * they mean this, which no timeout, window or drain can tell from longer.
 */
export const MAX_DURATION_MS = 2 ** 31 - 1;

/** Parses a duration into milliseconds; returns undefined when the text is not a duration. */
export function parseDuration(text: string): number | undefined {
  if (!DURATION_RE.test(text)) return undefined;
  if (text === '0') return 0;
  let ms = 0;
  for (const [, value, unit] of text.matchAll(DURATION_PART_RE)) {
    ms += Number(value) * DURATION_UNITS_MS[unit!]!;
  }
  return Math.min(ms, MAX_DURATION_MS);
}

const SIZE_UNITS: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1024,
  kib: 1024,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

/** Matches a whole size (case-insensitive in the code; the schema spells out both cases). */
export const SIZE_PATTERN = '^\\s*([0-9]+(\\.[0-9]+)?|\\.[0-9]+)\\s*([bB]|[kKmMgGtT][iI]?[bB])\\s*$';
const SIZE_RE = new RegExp(SIZE_PATTERN);

/** Parses a size into bytes; returns undefined when the value is not a size. */
export function parseSize(value: string | number): number | undefined {
  if (typeof value === 'number') return value === 0 ? 0 : undefined;
  if (value.trim() === '0') return 0;
  const match = SIZE_RE.exec(value);
  if (match === null) return undefined;
  return Math.floor(Number(match[1]) * SIZE_UNITS[match[3]!.toLowerCase()]!);
}

/** Formats milliseconds the way a user would write them ("1m30s", "250ms"), for messages and docs. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  if (ms < 1000) return `${ms}ms`;
  let rest = Math.round(ms);
  let out = '';
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (rest >= size) {
      out += `${Math.floor(rest / size)}${unit}`;
      rest %= size;
    }
  }
  if (rest > 0) out += `${rest}ms`;
  return out;
}

/** Formats bytes with the largest 1024-based unit that divides them ("10MB", "1536KB"). */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [['TB', 1024 ** 4], ['GB', 1024 ** 3], ['MB', 1024 ** 2], ['KB', 1024]] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}B`;
}
