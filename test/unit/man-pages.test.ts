/**
 * The manual pages checked against the code they document (STYLE.md §13): every schema property
 * with its type and default in packetpony.conf(5), every PP_ERR_ code, signal, option and metric,
 * the shipped examples valid, and both pages free of mandoc and groff warnings.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { USAGE } from '../../src/cli-args.js';
import { isDropInName } from '../../src/config/conf-dir.js';
import { loadConfig } from '../../src/config/load.js';
import { EXIT_CHILD_CONFIG } from '../../src/ipc/protocol.js';
import { REPO_ROOT } from '../helpers/paths.js';

const PAGE_8 = join(REPO_ROOT, 'man/packetpony.8');
const PAGE_5 = join(REPO_ROOT, 'man/packetpony.conf.5');
const page8 = readFileSync(PAGE_8, 'utf8');
const page5 = readFileSync(PAGE_5, 'utf8');

// ---- roff to plain text, enough for the macros these pages use ----

function unescape(text: string): string {
  return text
    .replace(/\\f(?:\(..|\[[^\]]*\]|.)/g, '')
    .replace(/\\\(dq/g, '"')
    .replace(/\\\(mc/g, 'µ')
    .replace(/\\\(bu/g, '•')
    .replace(/\\\(>=/g, '>=')
    .replace(/\\-/g, '-')
    .replace(/\\e/g, '\\')
    .replace(/\\&/g, '')
    .replace(/\\ /g, ' ');
}

/** Macro arguments, honouring double quotes. */
function macroArgs(rest: string): string[] {
  const args: string[] = [];
  for (const match of rest.matchAll(/"((?:[^"]|"")*)"|(\S+)/g)) args.push(match[1] ?? match[2]!);
  return args;
}

/** One input line as the text it shows (font macros joined the way troff joins them). */
function lineText(line: string): string {
  const macro = /^\.([A-Z]{1,2})(?:\s+(.*))?$/.exec(line);
  if (!macro) return line.startsWith('.') ? '' : unescape(line);
  const args = macroArgs(macro[2] ?? '');
  switch (macro[1]) {
    case 'B':
    case 'I':
      return unescape(args.join(' '));
    case 'BR':
    case 'RB':
    case 'IR':
    case 'RI':
    case 'BI':
    case 'IB':
      return unescape(args.join(''));
    default:
      return '';
  }
}

interface Entry {
  readonly tag: string;
  readonly body: string;
}

/** The `.TP` entries of a page: tag line as text, body as text up to the next paragraph macro. */
function entries(source: string): Map<string, Entry> {
  const lines = source.split('\n');
  const out = new Map<string, Entry>();
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== '.TP') continue;
    const tag = lineText(lines[i + 1] ?? '').trim();
    const body: string[] = [];
    for (let j = i + 2; j < lines.length && !/^\.(TP|SH|SS|PP|IP)\b/.test(lines[j]!); j++) body.push(lineText(lines[j]!));
    out.set(tag, { tag, body: body.join(' ').replace(/\s+/g, ' ').trim() });
  }
  return out;
}

/** The text of one section (`.SH NAME` up to the next `.SH`). */
function section(source: string, name: string): string {
  const start = source.indexOf(`\n.SH ${name}\n`);
  if (start < 0) return '';
  const end = source.indexOf('\n.SH ', start + 1);
  return source.slice(start, end < 0 ? undefined : end).split('\n').map(lineText).join(' ');
}

// ---- the schemas, walked into dotted paths ----

interface SchemaNode {
  readonly type?: string | readonly string[];
  readonly $ref?: string;
  readonly enum?: readonly string[];
  readonly default?: unknown;
  readonly description?: string;
  readonly properties?: Readonly<Record<string, SchemaNode>>;
  readonly items?: SchemaNode;
  readonly anyOf?: readonly SchemaNode[];
  readonly const?: unknown;
}

interface Property {
  readonly path: string;
  readonly node: SchemaNode;
}

function readSchema(name: string): SchemaNode & { $defs?: Record<string, SchemaNode> } {
  return JSON.parse(readFileSync(join(REPO_ROOT, 'schema', name), 'utf8')) as SchemaNode & { $defs?: Record<string, SchemaNode> };
}

/** Properties and nested properties; listener fields under defaults/listeners are documented once, apart. */
function walk(properties: Readonly<Record<string, SchemaNode>>, prefix = ''): Property[] {
  const out: Property[] = [];
  for (const [key, node] of Object.entries(properties)) {
    const path = `${prefix}${key}`;
    out.push({ path, node });
    if (node.properties) out.push(...walk(node.properties, `${path}.`));
  }
  return out;
}

const mainProperties = walk(readSchema('packetpony.schema.json').properties!);
const listenerProperties = walk(readSchema('listener.schema.json').$defs!.fields!.properties!);

/** Words the entry's opening must contain for the property's type. */
function typeWords(node: SchemaNode): string[] {
  if (node.$ref?.endsWith('/duration')) return ['duration'];
  if (node.$ref?.endsWith('/size')) return ['size'];
  if (node.$ref?.endsWith('/fields')) return ['section'];
  // A choice of a number or a word (workers: 3 or auto): the entry names both.
  if (node.anyOf) return node.anyOf.flatMap((choice) => (choice.const !== undefined ? [String(choice.const)] : typeWords(choice)));
  const types = typeof node.type === 'string' ? [node.type] : node.type ?? [];
  if (types.includes('integer') && types.includes('string')) return ['integer', 'size'];
  if (node.enum) return ['one of'];
  if (types.includes('object')) return ['section'];
  if (types.includes('array')) return ['list'];
  if (types.length === 1) return [types[0]!];
  throw new Error(`no type word for ${JSON.stringify(node)}`);
}

const conf5 = entries(page5);

const schemaCases: Array<[string, Property]> = [
  ...mainProperties.map((p): [string, Property] => ['packetpony.schema.json', p]),
  ...listenerProperties.map((p): [string, Property] => ['listener.schema.json', p]),
];

test('the schemas have the properties this test walks', (t) => {
  // A walk that found nothing would let every check below pass.
  const paths = schemaCases.map(([, p]) => p.path);
  for (const known of ['server.shutdown_timeout', 'logging.syslog.priority', 'rate_limits.action', 'udp.logging.min_log_bytes']) {
    t.true(paths.includes(known), known);
  }
  t.true(paths.length >= 45);
});

for (const [schema, { path, node }] of schemaCases) {
  test(`packetpony.conf(5) documents ${path} (${schema}) with its type and default`, (t) => {
    const entry = conf5.get(path);
    if (!entry) return t.fail(`no ".TP / .B ${path}" entry in man/packetpony.conf.5`);
    const opening = entry.body.slice(0, 100).toLowerCase();
    for (const word of typeWords(node)) t.true(opening.includes(word), `${path}: the entry should start with its type ("${word}"): ${entry.body.slice(0, 100)}`);
    for (const value of node.enum ?? []) t.true(entry.body.includes(value), `${path}: value "${value}" is not named`);
    if (node.default !== undefined && typeof node.default !== 'object') {
      t.true(entry.body.includes(`Default: ${String(node.default)}`), `${path}: "Default: ${String(node.default)}" missing: ${entry.body}`);
    }
  });
}

test('packetpony.conf(5) documents no key the schemas do not have', (t) => {
  const known = new Set(schemaCases.map(([, p]) => p.path));
  const start = page5.indexOf('\n.SH MAIN FILE\n');
  const end = page5.indexOf('\n.SH RATE LIMITS\n');
  const keys = [...entries(page5.slice(start, end)).keys()];
  t.true(keys.length > 40);
  t.deepEqual(keys.filter((k) => !known.has(k)), []);
});

// ---- error codes, exit status, signals, options ----

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sourceFiles(path) : path.endsWith('.ts') ? [path] : [];
  });
}

const sources = sourceFiles(join(REPO_ROOT, 'src')).map((path) => readFileSync(path, 'utf8'));
const codesInSource = new Set(sources.flatMap((text) => [...text.matchAll(/PP_ERR_[A-Z][A-Z0-9_]*[A-Z0-9]/g)].map((m) => m[0])));

test('packetpony(8) documents every PP_ERR_ code used in src/, and no other', (t) => {
  t.true(codesInSource.has('PP_ERR_CONFIG_INVALID'), 'the scan of src/ finds codes');
  const errorCodes = page8.slice(page8.indexOf('\n.SH ERROR CODES\n'), page8.indexOf('\n.SH ENVIRONMENT\n'));
  const documented = new Set([...entries(errorCodes).keys()].filter((k) => k.startsWith('PP_ERR_')));
  t.deepEqual([...codesInSource].filter((c) => !documented.has(c)).sort(), [], 'codes without an entry under ERROR CODES');
  t.deepEqual([...documented].filter((c) => !codesInSource.has(c)).sort(), [], 'documented codes no longer in src/');
});

test('packetpony(8) gives every exit status, the children\'s included', (t) => {
  const exit = entries(page8.slice(page8.indexOf('\n.SH EXIT STATUS\n'), page8.indexOf('\n.SH ERROR CODES\n')));
  for (const status of ['0', '1', '2', '130']) t.true(exit.has(status), `exit status ${status}`);
  t.regex(section(page8, 'EXIT STATUS'), new RegExp(`\\b${EXIT_CHILD_CONFIG} \\(EX_CONFIG\\)`));
});

test('packetpony(8) describes every signal the daemon handles', (t) => {
  const handled = new Set(sources.flatMap((text) => [...text.matchAll(/process\.on\('(SIG[A-Z0-9]+)'/g)].map((m) => m[1]!)));
  t.true(handled.has('SIGHUP') && handled.has('SIGTERM'), 'the scan of src/ finds the handlers');
  const signals = section(page8, 'SIGNALS');
  for (const signal of handled) t.true(signals.includes(signal), signal);
  t.regex(signals, /second one/);
});

test('packetpony(8) lists every command-line option of --help', (t) => {
  const options = [...USAGE.matchAll(/--[a-z][a-z-]*/g)].map((m) => m[0]);
  t.true(options.length >= 5);
  const documented = section(page8, 'OPTIONS') + section(page8, 'SYNOPSIS');
  for (const option of options) t.true(documented.includes(option), option);
});

test('packetpony.conf(5) names every metric the daemon registers', (t) => {
  const names = new Set(sources.flatMap((text) => [...text.matchAll(/name: '(packetpony_[a-z_]+)'/g)].map((m) => m[1]!)));
  t.true(names.size >= 12, 'the scan of src/ finds the metrics');
  const metrics = section(page5, 'METRICS AND ENDPOINTS');
  for (const name of names) t.true(metrics.includes(name), name);
  for (const path of ['/health', '/healthz', '/ready']) t.true(metrics.includes(path), path);
});

test('the drop-in leftovers packetpony.conf(5) lists are the ones the loader ignores', (t) => {
  const folder = section(page5, 'DESCRIPTION');
  for (const suffix of ['~', '.swp', '.swo', '.bak', '.tmp', '.rpmnew', '.rpmsave', '.rpmorig']) {
    t.false(isDropInName(`web.yaml${suffix}`), suffix);
    t.true(folder.includes(`${suffix},`) || folder.includes(`${suffix} or`), `${suffix} is not listed`);
  }
  t.false(isDropInName('web.yaml.dpkg-dist'));
  t.true(folder.includes('.dpkg-'));
  t.false(isDropInName('.web.yaml'));
  t.false(isDropInName('web.yaml.example'));
});

// ---- the examples are valid configurations ----

/** The blocks of EXAMPLES marked `.\" example: NAME`, as file text. */
function examples(): Map<string, string> {
  const out = new Map<string, string>();
  const lines = page5.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const mark = /^\.\\" example: (\S+)/.exec(lines[i]!);
    if (!mark) continue;
    const start = lines.indexOf('.nf', i);
    const end = lines.indexOf('.fi', start);
    out.set(mark[1]!, lines.slice(start + 1, end).filter((l) => !l.startsWith('.')).map(unescape).join('\n') + '\n');
  }
  return out;
}

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'pp-man-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('the examples of packetpony.conf(5) load without an error or a warning', (t) => {
  const blocks = examples();
  t.deepEqual([...blocks.keys()].sort(), ['conf.d/api.yaml', 'conf.d/dns.yaml', 'conf.d/web.yaml', 'main', 'standalone']);

  const dir = tempDir(t);
  for (const [name, text] of blocks) {
    if (name === 'standalone') continue;
    const path = join(dir, name === 'main' ? 'packetpony.yaml' : name);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
  }
  const { config, warnings } = loadConfig({ configFile: join(dir, 'packetpony.yaml') });
  t.deepEqual(config.listeners.map((l) => l.name), ['api', 'dns', 'web']);
  t.deepEqual(warnings, []);
  t.is(config.listeners.find((l) => l.name === 'api')!.rate_limits.action, 'throttle');

  const single = tempDir(t);
  writeFileSync(join(single, 'config.yaml'), blocks.get('standalone')!);
  const original = loadConfig({ configFile: join(single, 'config.yaml') });
  t.deepEqual(original.config.listeners.map((l) => l.name), ['ssh']);
  t.deepEqual(original.warnings, []);
});

// ---- lint ----

function tool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).status === 0;
}

for (const page of [PAGE_8, PAGE_5]) {
  const name = page.slice(page.lastIndexOf('/') + 1);
  test(`mandoc -Tlint finds nothing in ${name}`, (t) => {
    if (!tool('mandoc')) {
      t.log('skipped: mandoc is not installed (Debian: apt-get install mandoc)');
      return t.pass();
    }
    const result = spawnSync('mandoc', ['-Tlint', '-Wstyle', page], { encoding: 'utf8' });
    t.is(result.stdout + result.stderr, '');
    t.is(result.status, 0);
  });

  test(`groff -ww finds nothing in ${name}`, (t) => {
    if (!tool('groff')) {
      t.log('skipped: groff is not installed (Debian: apt-get install groff-base)');
      return t.pass();
    }
    // Typeset (PostScript) and as a terminal shows it (78 columns): long words warn only there.
    for (const device of ['ps', 'ascii']) {
      const result = spawnSync('groff', ['-ww', '-z', '-man', `-T${device}`, page], { encoding: 'utf8' });
      t.is(result.stdout + result.stderr, '', device);
      t.is(result.status, 0, device);
    }
  });
}
