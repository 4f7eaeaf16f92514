/**
 * Reliability case 11 — configuration fuzzing. Mutated and random YAML documents, as conf.d files
 * and as main files, through the loader in-process (the code `--check` runs), a sample through the
 * real `packetpony --check`, and a sample through a live conf.d reload.
 *
 * Pass criteria:
 * - in-process: loading either succeeds or throws a PacketPonyError (invalid or unreadable), never
 *   anything else; every issue has a file, a line and column ≥ 1 and a message; each document takes
 *   under DOC_DEADLINE_MS; an accepted configuration's durations all fit node's timers;
 * - --check: exit status 0 or 1, within 20 s, no "internal error" and no stack trace on stderr;
 * - live reload: every change ends in a reload summary or a rejection with its reason, the daemon
 *   stays up, writes no stack trace, and a canary listener keeps serving after every change.
 */
import test from 'ava';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { loadConfig } from '../../src/config/load.js';
import { MAX_DURATION_MS } from '../../src/config/units.js';
import { PacketPonyError, ConfigInvalidError } from '../../src/errors.js';
import { startDaemon } from '../helpers/daemon.js';
import { runCli } from '../helpers/run-cli.js';
import { startEchoServer } from '../helpers/servers.js';
import { attempt, hangUp } from '../helpers/tcp-clients.js';
import { waitFor } from '../helpers/wait-for.js';
import { tcpListener } from '../helpers/reliability/config.js';
import { durations, LISTENER_SEEDS, MAIN_SEEDS, mutated, randomDocument } from '../helpers/reliability/config-fuzz.js';
import { size } from '../helpers/reliability/scale.js';
import { tempDir } from '../helpers/reliability/temp.js';

const IN_PROCESS = size(2000, 30_000);
const THROUGH_CLI = size(20, 400);
const THROUGH_RELOAD = size(20, 250);
/** Generous: the slowest document seen takes ~1 s on a loaded two-core machine; a hang takes forever. */
const DOC_DEADLINE_MS = 5000;
const MAIN = 'logging:\n  stdout:\n    enabled: true\n';
const STACK_FRAME = /\n\s+at .+\(.*:\d+:\d+\)|\n\s+at .+:\d+:\d+/;

interface Outcome {
  readonly kind: 'ok' | 'invalid' | 'unreadable';
  readonly ms: number;
}

/** Loads `dir`/packetpony.yaml; throws on anything the criteria forbid. */
function check(dir: string): Outcome {
  const started = performance.now();
  let kind: Outcome['kind'];
  try {
    const { config } = loadConfig({ configFile: join(dir, 'packetpony.yaml') });
    const long = durations(config).filter((ms) => !(ms >= 0 && ms <= MAX_DURATION_MS));
    if (long.length > 0) throw new Error(`accepted durations a timer cannot take: ${long.join(', ')}`);
    kind = 'ok';
  } catch (error) {
    if (!(error instanceof PacketPonyError)) throw error;
    if (error instanceof ConfigInvalidError) {
      for (const issue of error.issues) {
        if (!(issue.line >= 1 && issue.col >= 1 && issue.message.length > 0 && typeof issue.file === 'string')) throw new Error(`malformed issue ${JSON.stringify(issue)}`);
        if (issue.message.includes('[object Object]') || STACK_FRAME.test(issue.message)) throw new Error(`bad message: ${issue.message}`);
      }
      kind = 'invalid';
    } else {
      kind = 'unreadable';
    }
  }
  const ms = performance.now() - started;
  if (ms > DOC_DEADLINE_MS) throw new Error(`took ${ms.toFixed(0)} ms`);
  return { kind, ms };
}

function tally(outcomes: Outcome[]): string {
  const kinds = new Map<string, number>();
  for (const o of outcomes) kinds.set(o.kind, (kinds.get(o.kind) ?? 0) + 1);
  const slowest = Math.max(...outcomes.map((o) => o.ms));
  return `${[...kinds].map(([k, n]) => `${k} ${n}`).join(', ')}; slowest ${slowest.toFixed(0)} ms`;
}

/** Documents that once broke something, kept as fixed cases. */
const HARD_CASES: Record<string, string> = {
  // After a deep parse, V8 compiled a regular expression near the stack's end and aborted the
  // process ("RegExpCompiler Allocation failed - process out of memory").
  'deep flow sequence, unclosed': '['.repeat(50_000),
  'deep flow sequence, closed': '['.repeat(20_000) + ']'.repeat(20_000),
  'deep flow mapping': '{a: '.repeat(20_000) + '1' + '}'.repeat(20_000),
  'deep block mapping': Array.from({ length: 2000 }, (_, i) => `${' '.repeat(i)}k:`).join('\n'),
  'deep compact sequences': '- '.repeat(5000) + 'x',
  'alias bomb': 'a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n',
  // Durations beyond node's timers (2^31-1 ms) made them fire after 1 ms: every connection cut.
  'idle_timeout of a billion hours': tcpListener('127.0.0.1:1', 'tcp:\n  idle_timeout: "1000000000h"\n  connect_timeout: "720h"\n'),
  'prototype keys': tcpListener('127.0.0.1:1', '__proto__: {action: log_only}\nrate_limits:\n  constructor: 1\n'),
};

test.serial('config fuzz, known hard cases: each a result or a PacketPonyError, quickly, and no timer overflows', (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'conf.d'));
  writeFileSync(join(dir, 'packetpony.yaml'), MAIN);
  for (const [name, doc] of Object.entries(HARD_CASES)) {
    writeFileSync(join(dir, 'conf.d', 'fuzz.yaml'), doc);
    const outcome = check(dir);
    t.log(`${name}: ${outcome.kind} in ${outcome.ms.toFixed(0)} ms`);
  }
  t.pass();
});

test.serial('config fuzz, deep nesting in a fresh process: two deep documents in a row are configuration errors, not a V8 abort', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const script = fileURLToPath(new URL('./fixtures/deep-nesting.js', import.meta.url));
  const result = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 60_000 });
  t.log(result.stdout.trim().split('\n').join(' | '));
  t.is(result.status, 0, `exit ${result.status} ${result.signal ?? ''}\n${result.stderr.slice(0, 1000)}`);
});

test.serial(`config fuzz in-process: ${IN_PROCESS} conf.d documents and ${IN_PROCESS / 2} main files — a result or a PacketPonyError, never anything else`, (t) => {
  t.timeout(size(120_000, 1_200_000));
  const dir = tempDir(t);
  mkdirSync(join(dir, 'conf.d'));
  const outcomes: Outcome[] = [];
  const seed = Date.now();
  const listenerDoc = fc.oneof({ weight: 4, arbitrary: mutated(LISTENER_SEEDS) }, { weight: 1, arbitrary: randomDocument });
  fc.assert(
    fc.property(listenerDoc, (doc) => {
      writeFileSync(join(dir, 'packetpony.yaml'), MAIN);
      writeFileSync(join(dir, 'conf.d', 'fuzz.yaml'), doc);
      outcomes.push(check(dir));
    }),
    { numRuns: IN_PROCESS, seed },
  );
  t.log(`conf.d documents (fast-check seed ${seed}): ${tally(outcomes)}`);
  const mains: Outcome[] = [];
  const mainDoc = fc.oneof({ weight: 4, arbitrary: mutated(MAIN_SEEDS) }, { weight: 1, arbitrary: randomDocument });
  writeFileSync(join(dir, 'conf.d', 'fuzz.yaml'), tcpListener('127.0.0.1:1'));
  fc.assert(
    fc.property(mainDoc, (doc) => {
      writeFileSync(join(dir, 'packetpony.yaml'), doc);
      mains.push(check(dir));
    }),
    { numRuns: IN_PROCESS / 2, seed: seed + 1 },
  );
  t.log(`main files (fast-check seed ${seed + 1}): ${tally(mains)}`);
  t.true(outcomes.some((o) => o.kind === 'ok') && outcomes.some((o) => o.kind === 'invalid'), 'the fuzzer found only one kind of outcome');
});

test.serial(`config fuzz through packetpony --check: ${THROUGH_CLI} documents — exit 0 or 1, no stack trace`, async (t) => {
  t.timeout(size(120_000, 900_000));
  const docs = fc.sample(fc.oneof(mutated(LISTENER_SEEDS), mutated(MAIN_SEEDS), randomDocument), THROUGH_CLI);
  const codes = new Map<string, number>();
  let slowest = 0;
  // Two at a time: each is a node process.
  for (let i = 0; i < docs.length; i += 2) {
    await Promise.all(
      docs.slice(i, i + 2).map(async (doc, k) => {
        const dir = tempDir(t);
        const asMain = (i + k) % 3 === 0;
        writeFileSync(join(dir, 'packetpony.yaml'), asMain ? doc : MAIN);
        mkdirSync(join(dir, 'conf.d'));
        writeFileSync(join(dir, 'conf.d', 'fuzz.yaml'), asMain ? tcpListener('127.0.0.1:1') : doc);
        const started = performance.now();
        const result = await runCli(['--config', join(dir, 'packetpony.yaml'), '--check'], { cwd: dir, timeoutMs: 20_000 });
        slowest = Math.max(slowest, performance.now() - started);
        codes.set(String(result.code), (codes.get(String(result.code)) ?? 0) + 1);
        const context = `document:\n${doc.slice(0, 2000)}\nstderr:\n${result.stderr.slice(0, 2000)}`;
        t.true(result.code === 0 || result.code === 1, `exit ${result.code}\n${context}`);
        t.false(/internal error/.test(result.stderr) || STACK_FRAME.test(result.stderr), context);
        if (result.code === 1) t.regex(result.stderr, /packetpony: |:\d+:\d+: /, context);
      }),
    );
  }
  t.log(`--check exit codes: ${[...codes].map(([c, n]) => `${c} ×${n}`).join(', ')}; slowest run ${slowest.toFixed(0)} ms`);
});

test.serial(`config fuzz through a live conf.d reload: ${THROUGH_RELOAD} changes — each a reload summary or a rejection with its reason, the daemon and a canary listener unharmed`, async (t) => {
  t.timeout(size(180_000, 1_200_000));
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, { 'conf.d/canary.yaml': tcpListener(`127.0.0.1:${echo}`) });
  const canary = await daemon.port('canary');
  const docs = fc.sample(fc.oneof({ weight: 5, arbitrary: mutated(LISTENER_SEEDS) }, { weight: 1, arbitrary: randomDocument }), THROUGH_RELOAD);
  const results = new Map<string, number>();
  for (const [i, raw] of docs.entries()) {
    // Whatever the mutation made of it, a listener that comes up must stay on loopback.
    const doc = raw.replace(/listen_address:.*$/gm, 'listen_address: "127.0.0.1:0"');
    const from = daemon.lines.length;
    writeFileSync(join(daemon.dir, 'conf.d', 'fuzz.yaml'), `${doc}\n# change ${i}\n`);
    const summary = await daemon.waitForLine(/configuration reloaded \(file change|configuration reload \(file change.*\) rejected|configuration reload failed/, 15_000, from);
    const result = /result=(\w+)/.exec(summary)?.[1] ?? (summary.includes('rejected') ? 'rejected' : 'failed');
    results.set(result, (results.get(result) ?? 0) + 1);
    const said = daemon.lines.slice(from);
    if (result !== 'ok') t.true(said.some((l) => /\[ERROR\]|\[WARNING\]/.test(l)), `a reload that was not ok gave no reason:\n${said.join('\n')}`);
    t.false(said.some((l) => l.includes('internal error')), said.join('\n'));
    const client = await attempt(t, canary);
    t.truthy(client, `the canary refused a client after change ${i}`);
    if (client) await hangUp(client);
    t.is(daemon.process.exitCode, null);
  }
  t.false(STACK_FRAME.test(daemon.stderr()), daemon.stderr());
  t.log(`${THROUGH_RELOAD} reloads: ${[...results].map(([r, n]) => `${r} ${n}`).join(', ')}; the canary served after every one`);
  await waitFor(() => daemon.process.exitCode === null || undefined, 'the daemon to be up');
});
