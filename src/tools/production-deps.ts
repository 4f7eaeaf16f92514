/**
 * The package folders the installed program needs at run time: the production dependencies of
 * package.json and theirs, found the way Node's resolver finds them (node_modules of the requiring
 * package, then of each parent folder up to the package root). Reading what `npm ci` already put
 * in node_modules — rather than running npm again — installs offline, with exactly the versions
 * the tests ran with.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';

interface Manifest {
  readonly name?: string;
  readonly dependencies?: Readonly<Record<string, string>>;
  readonly optionalDependencies?: Readonly<Record<string, string>>;
  readonly peerDependencies?: Readonly<Record<string, string>>;
}

function readManifest(dir: string): Manifest {
  return JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Manifest;
}

/** Where `name` required from `fromDir` lives, without leaving `root`; undefined when absent. */
function resolvePackage(name: string, fromDir: string, root: string): string | undefined {
  let dir = fromDir;
  for (;;) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    // fromDir is root or a package folder below it, so walking up always meets root.
    if (dir === root || dirname(dir) === dir) return undefined;
    dir = dirname(dir);
  }
}

/**
 * The folders (relative to `root`, e.g. `node_modules/ajv`) of every package the production
 * dependency tree of `root`'s package.json reaches, sorted. Throws when a required (non-optional,
 * non-peer) dependency is not installed: the copy would not run.
 */
export function productionPackages(root: string): string[] {
  const found = new Set<string>();
  const queue: string[] = [root];
  while (queue.length > 0) {
    const dir = queue.shift()!;
    const manifest = readManifest(dir);
    const wanted: Array<[string, boolean]> = [
      ...Object.keys(manifest.dependencies ?? {}).map((n): [string, boolean] => [n, true]),
      // Optional and peer dependencies are taken when npm installed them, and skipped otherwise.
      ...Object.keys(manifest.optionalDependencies ?? {}).map((n): [string, boolean] => [n, false]),
      ...Object.keys(manifest.peerDependencies ?? {}).map((n): [string, boolean] => [n, false]),
    ];
    for (const [name, required] of wanted) {
      const at = resolvePackage(name, dir, root);
      if (at === undefined) {
        if (required) throw new Error(`${name} (needed by ${manifest.name ?? dir}) is not installed in ${join(root, 'node_modules')}: run npm ci first`);
        continue;
      }
      const rel = relative(root, at);
      if (found.has(rel)) continue;
      found.add(rel);
      queue.push(at);
    }
  }
  return [...found].sort();
}
