// Builds PacketPony's native addon (addon.c, see its header) for the Node running this script and
// puts it next to the compiled JavaScript, where src/native/addon.ts loads it:
// dist/src/native/abi-<process.versions.modules>/packetpony_native.node. One folder per Node ABI,
// so that a build for another Node line (`npm run test:node`, test/tools/test-node.ts) sits beside
// the default one instead of replacing it; each Node loads its own.
//
// Optional by design: off Linux, or without a C compiler and Node's headers, it says so and
// PacketPony takes Node's own paths instead (the same behaviour, slower: UDP through dgram, TCP
// reads and writes through Node's streams). It rebuilds only when a source is newer than the
// built file, so `npm run build` stays quick.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const target = join(here, '..', '..', 'dist', 'src', 'native', `abi-${process.versions.modules}`, 'packetpony_native.node');
// Every file node-gyp reads (binding.gyp's sources and addon.h): package.json's `files` must ship
// each of them, which test/integration/package.test.ts checks from a packed tarball.
const sourceNames = ['addon.h', 'addon.c', 'udp_batch.c', 'socket_calls.c', 'tcp_reads.c', 'process_calls.c', 'unix_dgram.c', 'socket_bind.c', 'reuseport.c', 'binding.gyp'];
const sources = sourceNames.map((name) => join(here, name));

function skip(why, details = '') {
  console.warn(`packetpony: the native addon is not built (${why}); UDP is relayed through Node's dgram and TCP reads and writes go through Node's streams instead.`);
  if (details !== '') console.warn(details);
  process.exit(0);
}

if (process.platform !== 'linux') skip(`it needs Linux, this is ${process.platform}`);
const absent = sourceNames.filter((name, i) => !existsSync(sources[i]));
if (absent.length > 0) skip(`${absent.join(', ')} missing from ${here}`);
if (existsSync(target)) {
  const built = statSync(target).mtimeMs;
  if (sources.every((file) => statSync(file).mtimeMs <= built)) process.exit(0);
}

// npm tells its scripts where its node-gyp is; outside npm, look next to this node's npm.
const candidates = [
  process.env.npm_config_node_gyp,
  join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
].filter((file) => typeof file === 'string' && existsSync(file));
if (candidates.length === 0) skip('node-gyp not found');

// Build against this node's own headers when it has them (npm passes its nodedir setting, if any):
// node-gyp would otherwise try to download them.
const args = [candidates[0], 'rebuild'];
const prefix = dirname(dirname(process.execPath));
if (process.env.npm_config_nodedir === undefined && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) {
  args.push(`--nodedir=${prefix}`);
}
const result = spawnSync(process.execPath, args, { cwd: here, encoding: 'utf8' });
if (result.status !== 0) {
  const lines = `${result.stdout ?? ''}${result.stderr ?? ''}`.trim().split('\n');
  const output = lines.filter((line) => /error|ERR!/i.test(line)).slice(0, 8).join('\n');
  skip('node-gyp failed', output);
}
mkdirSync(dirname(target), { recursive: true });
// A new file renamed over the old one: running daemons keep the copy they loaded (writing into a
// loaded shared object in place would crash them).
copyFileSync(join(here, 'build', 'Release', 'packetpony_native.node'), `${target}.tmp`);
renameSync(`${target}.tmp`, target);
