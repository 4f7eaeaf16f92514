/**
 * The arrows between src/'s folders, checked on every import (issue 25): the layering DESIGN.md
 * describes holds without anyone remembering it. Each folder may import only the folders listed
 * for it; a few modules are off limits even where their folder is allowed (the log sinks, the
 * metrics server), and the pure policy may not import Node's sockets or timers.
 */
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { REPO_ROOT } from '../helpers/paths.js';

const SRC = join(REPO_ROOT, 'src');

/**
 * Folder → the folders it may import (besides itself). `root` is src/'s own files (cli.ts,
 * errors.ts, paths.ts …): cli.ts starts everything.
 */
const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  // Reading and checking files: nothing that runs.
  config: ['root'],
  // Pure decisions, clock injected.
  policy: ['config'],
  // Event shapes, counters, formats, sinks, metrics: the reasons come from policy; the unix
  // socket sink uses the addon.
  telemetry: ['config', 'policy', 'native', 'root'],
  // What crosses the channel between supervisor and child, defined once for both.
  ipc: ['config', 'policy', 'telemetry'],
  native: [],
  // Every use of Node's internals, each behind a probe; our addon's loader below it.
  platform: ['native'],
  // The data path: knows sockets, not the channel's other end.
  proxy: ['config', 'policy', 'telemetry', 'native', 'ipc', 'platform', 'root'],
  // Shared limits: the store exchange beside the limiter.
  fleet: ['config', 'policy', 'telemetry'],
  // A child wires the proxy core to the channel.
  child: ['config', 'policy', 'telemetry', 'ipc', 'native', 'proxy', 'fleet', 'root'],
  // The parent: never the data path, never a child's modules.
  supervisor: ['config', 'telemetry', 'ipc', 'native', 'platform', 'root'],
  tools: ['root', 'config'],
  root: ['config', 'supervisor', 'telemetry', 'tools'],
};

/** Modules only some folders may import, even where their folder is allowed. */
const RESTRICTED: ReadonlyArray<{ readonly module: RegExp; readonly only: readonly string[]; readonly why: string }> = [
  { module: /^telemetry\/sinks\//, only: ['telemetry', 'supervisor', 'root'], why: 'log sinks belong to the supervisor: a child sends its events over the channel' },
  { module: /^telemetry\/metrics\/metrics-server/, only: ['telemetry', 'supervisor'], why: 'the HTTP endpoints are the supervisor\'s' },
];

/** Node modules a folder may not import at all. */
const FORBIDDEN_NODE: Readonly<Record<string, RegExp>> = {
  policy: /^(node:)?(net|dgram|timers|timers\/promises|child_process|cluster|http|https|fs|worker_threads)$/,
  // (node:net is allowed for its address helpers, isIP and friends.)
  config: /^(node:)?(dgram|child_process|cluster|http|https|worker_threads)$/,
};

export interface ImportArrow {
  /** Path under src/, e.g. proxy/tcp-listener.ts. */
  readonly file: string;
  readonly specifier: string;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

/** Static imports, `export … from` and dynamic import() with a string literal. */
function importsOf(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\s[^;]*?\sfrom\s+'([^']+)'/gms)) out.push(m[1]!);
  for (const m of text.matchAll(/^\s*import\s+'([^']+)'/gm)) out.push(m[1]!);
  for (const m of text.matchAll(/\bimport\(\s*'([^']+)'\s*\)/g)) out.push(m[1]!);
  return out;
}

function folderOf(pathUnderSrc: string): string {
  const slash = pathUnderSrc.indexOf('/');
  return slash < 0 ? 'root' : pathUnderSrc.slice(0, slash);
}

/** Every arrow that breaks the rules, as a sentence naming the file, the import and the rule. */
export function violations(arrows: readonly ImportArrow[]): string[] {
  const out: string[] = [];
  for (const { file, specifier } of arrows) {
    const from = folderOf(file);
    if (!specifier.startsWith('.')) {
      const forbidden = FORBIDDEN_NODE[from];
      if (forbidden?.test(specifier)) out.push(`src/${file} imports ${specifier}: ${from}/ may not use ${specifier}`);
      continue;
    }
    const target = relative(SRC, resolve(SRC, dirname(file), specifier)).replace(/\.js$/, '.ts');
    if (target.startsWith('..')) {
      out.push(`src/${file} imports ${specifier}, outside src/`);
      continue;
    }
    const to = folderOf(target);
    if (to !== from && !(ALLOWED[from] ?? []).includes(to)) {
      out.push(`src/${file} imports src/${target}: ${from}/ may import only ${[from, ...(ALLOWED[from] ?? [])].join(', ')}`);
      continue;
    }
    for (const rule of RESTRICTED) {
      if (rule.module.test(target) && !rule.only.includes(from)) out.push(`src/${file} imports src/${target}: ${rule.why}`);
    }
  }
  return out;
}

function allArrows(): ImportArrow[] {
  return sourceFiles(SRC).flatMap((path) => {
    const file = relative(SRC, path);
    return importsOf(readFileSync(path, 'utf8')).map((specifier) => ({ file, specifier }));
  });
}

test('every folder of src/ has rules', (t) => {
  const folders = readdirSync(SRC, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  for (const folder of folders) t.true(folder in ALLOWED, `src/${folder}/ is new: say in test/unit/layering.test.ts what it may import`);
});

test('no import in src/ breaks the layering', (t) => {
  const arrows = allArrows();
  // A scan that found nothing would let everything pass.
  t.true(arrows.filter((a) => a.specifier.startsWith('.')).length > 200, `only ${arrows.length} imports found`);
  t.deepEqual(violations(arrows), []);
});

test('the check catches the arrows it is there for', (t) => {
  const found = violations([
    { file: 'supervisor/listener-child.ts', specifier: '../proxy/target-pool.js' },
    { file: 'policy/verdict.ts', specifier: '../telemetry/events.js' },
    { file: 'proxy/tcp-listener.ts', specifier: '../supervisor/socket-owner.js' },
    { file: 'proxy/udp-listener.ts', specifier: '../telemetry/sinks/syslog.js' },
    { file: 'child/main.ts', specifier: '../supervisor/index.js' },
    { file: 'supervisor/index.ts', specifier: '../child/main.js' },
    { file: 'config/load.ts', specifier: '../policy/index.js' },
    { file: 'policy/rate-limiter.ts', specifier: 'node:timers' },
    { file: 'ipc/protocol.ts', specifier: '../proxy/target-pool.js' },
  ]);
  t.is(found.length, 9, found.join('\n'));
  t.regex(found[0]!, /src\/supervisor\/listener-child\.ts imports src\/proxy\/target-pool\.ts: supervisor\/ may import only/);
  t.deepEqual(violations([{ file: 'proxy/tcp-listener.ts', specifier: '../policy/index.js' }, { file: 'telemetry/events.ts', specifier: '../policy/verdict.js' }]), []);
});
