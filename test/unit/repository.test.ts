/** The repository checked against itself. */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/paths.js';

test('README.md shows the two set-up commands first, the ones .ci/run runs', (t) => {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const firstBlock = /```(?:sh|bash|console)?\n([\s\S]*?)```/.exec(readme)![1]!;
  const commands = firstBlock.split('\n').map((l) => l.replace(/#.*$/, '').trim()).filter(Boolean);
  t.deepEqual(commands.slice(0, 2), ['npm ci', 'npm start']);
  t.true(commands.includes('npm test'));
  const ci = readFileSync(join(REPO_ROOT, '.ci/run'), 'utf8');
  t.true(ci.includes('\nnpm ci\n') && ci.includes('\nnpm test\n'));
});

test('package.json pins every dependency and targets Node 20.19+', (t) => {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as Record<string, Record<string, string>>;
  for (const [name, version] of Object.entries({ ...pkg.dependencies, ...pkg.devDependencies })) {
    t.regex(version, /^\d+\.\d+\.\d+$/, `${name} must be pinned`);
  }
  t.is(pkg.engines!.node, '>=20.19');
  t.is(pkg.type as unknown as string, 'module');
});
