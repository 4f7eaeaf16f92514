/** The repository checked against itself. */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
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

test('README.md names every supported Node line and the release each is tested with', (t) => {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const requirements = /## Requirements\n([\s\S]*?)\n## /.exec(readme)?.[1] ?? '';
  t.not(requirements, '', 'README.md has a Requirements section');
  t.true(requirements.includes(`Node.js ${OLDEST_LINE}.19`));
  for (const version of Object.values(PINNED)) t.true(requirements.includes(version), version);
});
