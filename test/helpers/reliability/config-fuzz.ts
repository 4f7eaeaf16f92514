/**
 * Configuration documents for fuzzing, as fast-check arbitraries: the repository's own examples and
 * fixtures mutated line by line, character by character and value by value; YAML token soup; random
 * structures under the real keys; and a few known hard cases (deep nesting, alias bombs, tags).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { parse, stringify } from 'yaml';
import { REPO_ROOT } from '../../helpers/paths.js';

function yamlFiles(dir: string, filter = (name: string): boolean => /\.ya?ml(\.example)?$/.test(name)): string[] {
  try {
    return readdirSync(join(REPO_ROOT, dir)).filter(filter).map((name) => readFileSync(join(REPO_ROOT, dir, name), 'utf8'));
  } catch {
    return [];
  }
}

/** Listener files (one conf.d file each): examples and the invalid fixtures. */
export const LISTENER_SEEDS = [...yamlFiles('conf.d'), ...yamlFiles('systemd/conf.d'), ...yamlFiles('test/fixtures/invalid-listener')];
/** Main files, most of them original-style with inline listeners. */
export const MAIN_SEEDS = [...yamlFiles('test/fixtures/spec'), ...yamlFiles('systemd', (n) => n === 'packetpony.yaml'), ...yamlFiles('test/fixtures/invalid-main')];

const KEYS = [
  'protocol', 'listen_address', 'target_address', 'targets', 'allowlist', 'denylist', 'rate_limits', 'tcp', 'udp', 'logging',
  'max_connections_per_ip', 'connections_window', 'max_connection_attempts_per_ip', 'attempts_window', 'max_bandwidth_per_ip',
  'bandwidth_window', 'max_total_connections', 'action', 'throttle_minimum', 'connect_timeout', 'read_timeout', 'write_timeout',
  'idle_timeout', 'session_timeout', 'buffer_size', 'log_session_start', 'log_session_close', 'periodic_log_interval',
  'periodic_log_bytes', 'min_log_duration', 'min_log_bytes', 'listeners', 'name', 'server', 'shutdown_timeout', 'metrics',
  'prometheus', 'enabled', 'path', 'stdout', 'jsonlog', 'syslog', 'network', 'address', 'tag', 'priority', 'use_json', 'defaults',
  'conf_dir', 'proxy_protocol', 'accept_proxy_protocol', 'health_check', 'balance', '__proto__', 'constructor', 'prototype',
];

const TOKENS = [
  ':', ': ', '- ', '-', '[', ']', '{', '}', ',', '&a ', '*a', '!!str ', '!!int ', '!!binary ', '!!set ', '!!omap ', '!foo ', '<<: ',
  '? ', '|', '>', '"', "'", '#', '%YAML 1.2\n', '---\n', '...\n', '\n', '  ', '\t', '0', '-1', '1e400', '0x1F', '.nan', '.inf',
  '~', 'null', 'true', 'yes', 'no', '65536', '4294967296', '99999999999999999999', '"1m"', '"0"', '"10MB"', '"1.5h"', '"-1s"',
  '"::ffff:1.2.3.4/96"', '"0.0.0.0/0"', '"127.0.0.1:0"', '"[::1]:0"', '"localhost:80"', '"a.invalid:1"', 'tcp', 'udp', 'drop',
  'throttle', 'log_only', '\u0000', '\ufeff', '\u2028', 'é', '😀', ...KEYS.map((k) => `${k}: `),
];

const SPECIAL_VALUES: unknown[] = [
  null, true, false, 0, -0, -1, 1.5, 2 ** 31, 2 ** 53, 1e308, -1e308, '', ' ', '0', '-1s', '1ns', '99999999999999999999h',
  '999999999TB', '1e3s', '1m1m', '0.0.0.0:0', ':', '[::]:65535', '[::1', '256.0.0.1:1', 'a'.repeat(10_000), [], {}, [[[]]],
  { a: { b: { c: {} } } }, ['127.0.0.1/33', '::/129', 'x'], 'TCP', 'UDP', 'Drop', 'THROTTLE',
];

type Op = (text: string) => string;

const lineOp: fc.Arbitrary<Op> = fc.oneof(
  fc.nat().map((n): Op => (text) => {
    const lines = text.split('\n');
    lines.splice(n % Math.max(1, lines.length), 1);
    return lines.join('\n');
  }),
  fc.nat().map((n): Op => (text) => {
    const lines = text.split('\n');
    const i = n % Math.max(1, lines.length);
    lines.splice(i, 0, lines[i] ?? '');
    return lines.join('\n');
  }),
  fc.tuple(fc.nat(), fc.nat()).map(([a, b]): Op => (text) => {
    const lines = text.split('\n');
    const i = a % Math.max(1, lines.length);
    const j = b % Math.max(1, lines.length);
    [lines[i], lines[j]] = [lines[j] ?? '', lines[i] ?? ''];
    return lines.join('\n');
  }),
  fc.tuple(fc.nat(), fc.array(fc.constantFrom(...TOKENS), { maxLength: 6 }), fc.nat({ max: 12 })).map(([n, tokens, indent]): Op => (text) => {
    const lines = text.split('\n');
    lines.splice(n % Math.max(1, lines.length + 1), 0, ' '.repeat(indent) + tokens.join(''));
    return lines.join('\n');
  }),
);

const charOp: fc.Arbitrary<Op> = fc.oneof(
  fc.tuple(fc.nat(), fc.constantFrom(...TOKENS)).map(([n, token]): Op => (text) => {
    const i = n % Math.max(1, text.length);
    return text.slice(0, i) + token + text.slice(i);
  }),
  fc.tuple(fc.nat(), fc.string({ unit: 'binary', maxLength: 4 })).map(([n, chars]): Op => (text) => {
    const i = n % Math.max(1, text.length);
    return text.slice(0, i) + chars + text.slice(i + chars.length);
  }),
  fc.nat().map((n): Op => (text) => text.slice(0, n % Math.max(1, text.length))),
);

/** Replaces one value (found by walking the parsed document) with a random or special one. */
const valueOp: fc.Arbitrary<Op> = fc
  .tuple(fc.nat(), fc.oneof(fc.constantFrom(...SPECIAL_VALUES), fc.jsonValue({ maxDepth: 3 })), fc.boolean())
  .map(([n, value, renameKey]): Op => (text) => {
    let data: unknown;
    try {
      data = parse(text, { logLevel: 'silent' });
    } catch {
      return text;
    }
    const slots: Array<[Record<string, unknown>, string]> = [];
    const walk = (node: unknown): void => {
      if (node === null || typeof node !== 'object') return;
      // Plain mappings and sequences only: a !!binary scalar parses to a Uint8Array, whose
      // elements cannot be deleted or renamed.
      if (!Array.isArray(node) && Object.getPrototypeOf(node) !== Object.prototype) return;
      for (const key of Object.keys(node)) {
        slots.push([node as Record<string, unknown>, key]);
        walk((node as Record<string, unknown>)[key]);
      }
    };
    walk(data);
    if (slots.length === 0) return text;
    const [holder, key] = slots[n % slots.length]!;
    if (renameKey && !Array.isArray(holder)) {
      const v = holder[key];
      delete holder[key];
      holder[KEYS[n % KEYS.length]!] = v;
    } else {
      holder[key] = value;
    }
    try {
      return stringify(data);
    } catch {
      return text;
    }
  });

const op = fc.oneof({ weight: 3, arbitrary: lineOp }, { weight: 3, arbitrary: charOp }, { weight: 4, arbitrary: valueOp });

/** A seed with 1–8 mutations. */
export function mutated(seeds: readonly string[]): fc.Arbitrary<string> {
  return fc.tuple(fc.constantFrom(...seeds), fc.array(op, { minLength: 1, maxLength: 8 })).map(([seed, ops]) => ops.reduce((text, f) => f(text), seed));
}

/** Documents built from scratch. */
export const randomDocument: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 300 }),
  fc.array(fc.constantFrom(...TOKENS), { maxLength: 60 }).map((t) => t.join('')),
  fc.dictionary(fc.constantFrom(...KEYS), fc.oneof(fc.constantFrom(...SPECIAL_VALUES), fc.jsonValue({ maxDepth: 3 })), { maxKeys: 8 }).map((d) => stringify(d)),
  fc.record({ kind: fc.constantFrom('[', '{a: ', '- ', '  k:\n', 'a: &a [x]\nb: [*a,*a]\n'), n: fc.integer({ min: 1, max: 1000 }) }).map(({ kind, n }) => kind.repeat(n)),
);

/** Every number in a configuration under a duration key (…_timeout, …_window, …_interval, …_duration). */
export function durations(config: unknown): number[] {
  const out: number[] = [];
  const walk = (node: unknown, key: string): void => {
    if (typeof node === 'number' && /(_timeout|_window|_interval|_duration)$/.test(key)) out.push(node);
    if (node === null || typeof node !== 'object') return;
    for (const [k, v] of Object.entries(node)) walk(v, Array.isArray(node) ? key : k);
  };
  walk(config, '');
  return out;
}
