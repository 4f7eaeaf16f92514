/** The repository checked against itself. */
import test from 'ava';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { REPO_ROOT } from '../helpers/paths.js';
import { ENGINES, OLDEST_LINE, PINNED } from '../tools/node-lines.js';

test('README.md shows the two set-up commands first, the ones .ci/run runs', (t) => {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const firstBlock = /```(?:sh|bash|console)?\n([\s\S]*?)```/.exec(readme)![1]!;
  const commands = firstBlock.split('\n').map((l) => l.replace(/#.*$/, '').trim()).filter(Boolean);
  t.deepEqual(commands.slice(0, 2), ['npm ci', 'npm start']);
  t.true(commands.includes('npm test'));
  const ci = readFileSync(join(REPO_ROOT, '.ci/run'), 'utf8');
  t.true(ci.includes('\nnpm ci\n') && ci.includes('\nnpm test\n'));
});

test('package.json pins every dependency and targets the Node lines that are tested', (t) => {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as Record<string, Record<string, string>>;
  for (const [name, version] of Object.entries({ ...pkg.dependencies, ...pkg.devDependencies })) {
    t.regex(version, /^\d+\.\d+\.\d+$/, `${name} must be pinned`);
  }
  // One range per line npm run test:node knows, and nothing else: supported means tested.
  const lines = [OLDEST_LINE, ...Object.keys(PINNED)];
  t.is(pkg.engines!.node, ENGINES);
  t.deepEqual(ENGINES.split(' || ').map((range) => /^\^(\d+)\./.exec(range)![1]), lines);
  // The types are the oldest line's, so the code cannot use what that line lacks.
  t.is(pkg.devDependencies!['@types/node']!.split('.')[0], OLDEST_LINE);
  t.is(pkg.type as unknown as string, 'module');
});

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function anchorOf(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[`*_]/g, '')
    .replace(/[^\p{L}\p{N} -]/gu, '')
    .replace(/ /g, '-');
}

function markdownFiles(): string[] {
  const docs = readdirSync(join(REPO_ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`);
  const bench = readdirSync(join(REPO_ROOT, 'test/bench')).filter((f) => f.endsWith('.md')).map((f) => `test/bench/${f}`);
  return ['README.md', ...docs, ...bench];
}

function anchorsIn(file: string): Set<string> {
  const text = readFileSync(join(REPO_ROOT, file), 'utf8').replace(/```[\s\S]*?```/g, '');
  return new Set([...text.matchAll(/^#{1,6} (.+)$/gm)].map((m) => anchorOf(m[1]!)));
}

test('every relative link in README.md, docs/ and the bench reports leads somewhere', (t) => {
  const files = markdownFiles();
  t.true(files.length >= 5);
  let checked = 0;
  for (const file of files) {
    const text = readFileSync(join(REPO_ROOT, file), 'utf8').replace(/```[\s\S]*?```/g, '');
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^(https?:|mailto:)/.test(target!)) continue;
      const [path, anchor] = target!.split('#') as [string, string | undefined];
      const resolved = path === '' ? file : join(dirname(file), path);
      checked++;
      if (!existsSync(join(REPO_ROOT, resolved))) {
        t.fail(`${file}: the link ${target} leads to ${resolved}, which does not exist`);
        continue;
      }
      if (anchor !== undefined && resolved.endsWith('.md')) {
        t.true(anchorsIn(resolved).has(anchor), `${file}: the link ${target}: ${resolved} has no heading #${anchor}`);
      }
    }
  }
  t.true(checked > 10, `only ${checked} links checked`);
});

test('README.md stays a front door: at most 15 KB', (t) => {
  const size = readFileSync(join(REPO_ROOT, 'README.md')).length;
  t.true(size <= 15 * 1024, `README.md is ${size} bytes: move the detail to docs/ or the man pages`);
});

test('README.md names every supported Node line and the release each is tested with', (t) => {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const requirements = /## Requirements\n([\s\S]*?)\n## /.exec(readme)?.[1] ?? '';
  t.not(requirements, '', 'README.md has a Requirements section');
  t.true(requirements.includes(`Node.js ${OLDEST_LINE}.19`));
  for (const version of Object.values(PINNED)) t.true(requirements.includes(version), version);
});

/** Every source file under src/, relative to the repository. */
function sourceFiles(folder = 'src'): string[] {
  return readdirSync(join(REPO_ROOT, folder), { withFileTypes: true }).flatMap((entry) => {
    const path = `${folder}/${entry.name}`;
    if (entry.isDirectory()) return entry.name === 'build' ? [] : sourceFiles(path);
    return /\.(ts|c|h|mjs)$/.test(entry.name) ? [path] : [];
  });
}

test('a file in src/ over 450 lines says at its top why it is one file', (t) => {
  const long = sourceFiles().filter((path) => readFileSync(join(REPO_ROOT, path), 'utf8').split('\n').length > 450);
  for (const path of long) {
    const text = readFileSync(join(REPO_ROOT, path), 'utf8');
    const header = text.slice(0, text.indexOf('*/') + 2);
    t.regex(header, /~?\d{3} lines/, `${path}: longer than 450 lines with no reason in its header comment`);
  }
  t.log(`${long.length} files over 450 lines: ${long.join(', ')}`);
});

test('the data path reads no environment variable: switches are read once at start and passed in', (t) => {
  const allowed = new Set(['src/platform/probe.ts']);
  for (const path of sourceFiles().filter((p) => /^src\/(proxy|platform|policy)\//.test(p) && !allowed.has(p))) {
    const code = readFileSync(join(REPO_ROOT, path), 'utf8').split('\n').filter((line) => !/^\s*(\*|\/\/|\/\*)/.test(line));
    t.false(code.some((line) => line.includes('process.env')), `${path} reads process.env`);
  }
});
