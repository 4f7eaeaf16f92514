/**
 * `npm run install-system -- [--prefix DIR] [--destdir DIR] [--unitdir DIR] [--node PATH]`
 *
 * Installs the built program as a system service, the way `make install` would:
 *   PREFIX/lib/packetpony/          dist/src, schema, package.json, production node_modules
 *   PREFIX/bin/packetpony           a shell wrapper running it with this Node
 *   UNITDIR/packetpony.service      the unit, its command lines pointed at PREFIX/bin
 *   PREFIX/share/man/man8, man5     packetpony(8), packetpony.conf(5)
 *   PREFIX/share/doc/packetpony/    the shipped configuration files, for reference
 *   /etc/packetpony/packetpony.yaml, /etc/packetpony/conf.d/*.example, /etc/logrotate.d/packetpony
 *   /var/log/packetpony/
 * Everything lands under DESTDIR when one is given (for packagers: paths written into files are
 * the final ones, without DESTDIR). Program files are replaced; configuration files in /etc are
 * never overwritten: an existing one is kept, with a notice when it differs from the shipped one.
 * Works offline: dependencies are copied from node_modules, not fetched.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PACKAGE_ROOT } from '../paths.js';
import { productionPackages } from './production-deps.js';

export interface InstallOptions {
  /** Final installation prefix, e.g. /usr/local. */
  readonly prefix: string;
  /** Staging root prepended to every path written ('' for none). */
  readonly destdir: string;
  /** Where the unit goes (final path). */
  readonly unitdir: string;
  /** The node binary the wrapper runs (final path). */
  readonly node: string;
}

/** The prefix the repository's unit file names; the installer swaps in its own. */
export const UNIT_PREFIX = '/usr/local';
const ETC = '/etc/packetpony';
const LOG_DIR = '/var/log/packetpony';

export const USAGE = `Usage: npm run install-system -- [--prefix DIR] [--destdir DIR] [--unitdir DIR] [--node PATH]

  --prefix DIR    where the program goes (default /usr/local): DIR/lib/packetpony, DIR/bin,
                  DIR/share/man
  --destdir DIR   stage everything under DIR, for building packages (also: DESTDIR=DIR)
  --unitdir DIR   where packetpony.service goes (default DIR/lib/systemd/system for the prefixes
                  /usr and /usr/local, which systemd searches; /etc/systemd/system otherwise)
  --node PATH     the Node.js the service runs (default: the one running this installer)

Configuration goes to /etc/packetpony (existing files are never overwritten), the log folder is
/var/log/packetpony.`;

/** systemd looks for units in PREFIX/lib/systemd/system only for these prefixes. */
export function defaultUnitDir(prefix: string): string {
  return prefix === '/usr' || prefix === '/usr/local' ? `${prefix}/lib/systemd/system` : '/etc/systemd/system';
}

export function parseInstallArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): InstallOptions | 'help' {
  const values: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') return 'help';
    const match = /^--(prefix|destdir|unitdir|node)(?:=(.*))?$/s.exec(arg);
    if (!match) throw new Error(`unknown argument "${arg}"`);
    const value = match[2] ?? argv[++i];
    if (value === undefined || value === '') throw new Error(`--${match[1]} needs a value`);
    values[match[1]!] = value;
  }
  const prefix = (values.prefix ?? '/usr/local').replace(/(.)\/+$/, '$1');
  for (const key of ['prefix', 'unitdir', 'node'] as const) {
    const value = values[key];
    if (value !== undefined && !isAbsolute(value)) throw new Error(`--${key} must be an absolute path (it is written into the installed files): "${value}"`);
  }
  const destdir = values.destdir ?? env.DESTDIR ?? '';
  return {
    prefix,
    destdir: destdir === '' ? '' : resolve(destdir),
    unitdir: values.unitdir ?? defaultUnitDir(prefix),
    node: values.node ?? process.execPath,
  };
}

/** The repository's unit with its command lines pointed at PREFIX/bin/packetpony. */
export function rewriteUnit(unit: string, binary: string): string {
  return unit.replace(/^(Exec[A-Za-z]*=[-@:+!]*)\/usr\/local\/bin\/packetpony(?=\s|$)/gm, `$1${binary}`);
}

/** A shipped YAML file with its editor schema hint pointed at the installed schema folder. */
export function rewriteSchemaHint(yaml: string, schemaDir: string): string {
  return yaml.replace(/^(# yaml-language-server: \$schema=)(?:\.\.\/)+schema\/([\w.-]+)$/m, `$1${schemaDir}/$2`);
}

function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/**
 * The `packetpony` command. It finds the program relative to its own real location, so the same
 * file works staged under DESTDIR and installed, and runs it with an absolute Node path: systemd's
 * PATH is short, and `exec` keeps the PID, so node is the unit's main process.
 */
export function wrapperScript(node: string): string {
  return `#!/bin/sh
# PacketPony, installed by npm run install-system: runs PREFIX/lib/packetpony with this Node.js.
here=$(dirname "$(readlink -f "$0")")
exec ${shellQuote(node)} "$here/../lib/packetpony/dist/src/cli.js" "$@"
`;
}

type Report = (action: string, path: string, note?: string) => void;

/**
 * mkdir -p, with every folder it creates made 0755 whatever the umask: the service's user must be
 * able to reach the program and its configuration. Existing folders are left as they are.
 */
function ensureDir(path: string): void {
  if (existsSync(path)) return;
  ensureDir(dirname(path));
  mkdirSync(path);
  chmodSync(path, 0o755);
}

/** Makes everything readable by the service's unprivileged user, whatever the umask was. */
function normaliseModes(path: string): void {
  const stat = lstatSync(path);
  if (stat.isSymbolicLink()) return;
  if (stat.isDirectory()) {
    chmodSync(path, 0o755);
    for (const name of readdirSync(path)) normaliseModes(join(path, name));
  } else {
    chmodSync(path, stat.mode & 0o111 ? 0o755 : 0o644);
  }
}

/** Program files: the lib folder is built aside and swapped in, so a failed copy leaves the old one. */
function installProgram(root: string, options: InstallOptions, report: Report): void {
  const lib = join(root, options.prefix, 'lib/packetpony');
  const staging = `${lib}.new`;
  const old = `${lib}.old`;
  rmSync(staging, { recursive: true, force: true });
  ensureDir(staging);
  cpSync(join(PACKAGE_ROOT, 'package.json'), join(staging, 'package.json'));
  // The installer is of no use to the installed copy.
  const tools = join(PACKAGE_ROOT, 'dist/src/tools');
  cpSync(join(PACKAGE_ROOT, 'dist/src'), join(staging, 'dist/src'), { recursive: true, filter: (src) => src !== tools && !src.startsWith(`${tools}/`) });
  cpSync(join(PACKAGE_ROOT, 'schema'), join(staging, 'schema'), { recursive: true });
  for (const pkg of productionPackages(PACKAGE_ROOT)) {
    const from = join(PACKAGE_ROOT, pkg);
    const nested = join(from, 'node_modules');
    // A package's own node_modules holds nested dependencies: those the walk lists come on their own.
    cpSync(from, join(staging, pkg), { recursive: true, filter: (src) => src !== nested && !src.startsWith(`${nested}/`) });
  }
  normaliseModes(staging);
  rmSync(old, { recursive: true, force: true });
  const upgrade = existsSync(lib);
  if (upgrade) renameSync(lib, old);
  renameSync(staging, lib);
  rmSync(old, { recursive: true, force: true });
  // A running supervisor keeps its code but would fork children from the new files: restart it.
  report('installed', join(options.prefix, 'lib/packetpony'), upgrade ? 'replaced: restart a running service (systemctl restart packetpony)' : undefined);

  writeProgramFile(join(root, options.prefix, 'bin/packetpony'), wrapperScript(options.node), 0o755);
  report('installed', join(options.prefix, 'bin/packetpony'), `runs ${options.node}`);
}

function writeProgramFile(path: string, text: string, mode: number): void {
  ensureDir(dirname(path));
  writeFileSync(path, text);
  chmodSync(path, mode);
}

/** A file an administrator may have edited: written only when absent. */
function installConfigFile(root: string, path: string, text: string, reference: string, report: Report): void {
  const target = join(root, path);
  ensureDir(dirname(target));
  if (!existsSync(target)) {
    writeFileSync(target, text);
    chmodSync(target, 0o644);
    report('installed', path);
  } else if (readFileSync(target, 'utf8') === text) {
    report('unchanged', path);
  } else {
    report('kept', path, `yours differs from this version's, which is at ${reference}`);
  }
}

export function install(options: InstallOptions, report: Report): void {
  const root = options.destdir === '' ? '/' : options.destdir;
  const repo = (rel: string): string => readFileSync(join(PACKAGE_ROOT, rel), 'utf8');
  const schemaDir = join(options.prefix, 'lib/packetpony/schema');
  const docDir = join(options.prefix, 'share/doc/packetpony');
  const binary = join(options.prefix, 'bin/packetpony');

  installProgram(root, options, report);

  writeProgramFile(join(root, options.unitdir, 'packetpony.service'), rewriteUnit(repo('systemd/packetpony.service'), binary), 0o644);
  report('installed', join(options.unitdir, 'packetpony.service'));
  for (const [page, section] of [['packetpony.8', 'man8'], ['packetpony.conf.5', 'man5']] as const) {
    writeProgramFile(join(root, options.prefix, 'share/man', section, page), repo(join('man', page)), 0o644);
    report('installed', join(options.prefix, 'share/man', section, page));
  }

  // What ships, in /etc when absent, and always under share/doc for reference.
  const shipped: Array<[string, string]> = [
    [join(ETC, 'packetpony.yaml'), rewriteSchemaHint(repo('systemd/packetpony.yaml'), schemaDir)],
    ...readdirSync(join(PACKAGE_ROOT, 'systemd/conf.d')).sort().map((name): [string, string] => [
      join(ETC, 'conf.d', name),
      rewriteSchemaHint(repo(join('systemd/conf.d', name)), schemaDir),
    ]),
    ['/etc/logrotate.d/packetpony', repo('systemd/packetpony.logrotate')],
  ];
  for (const [path, text] of shipped) {
    const reference = join(docDir, 'examples', path.slice('/etc/'.length));
    writeProgramFile(join(root, reference), text, 0o644);
    installConfigFile(root, path, text, reference, report);
  }
  report('installed', join(docDir, 'examples'));

  // The service's own log folder; systemd (LogsDirectory=) hands it to the service's user.
  if (!existsSync(join(root, LOG_DIR))) {
    ensureDir(join(root, LOG_DIR));
    chmodSync(join(root, LOG_DIR), 0o750);
    report('created', LOG_DIR);
  }
}

function checkNode(node: string): string | undefined {
  const result = spawnSync(node, ['-p', 'process.versions.node'], { encoding: 'utf8' });
  if (result.status !== 0) return `${node} does not run: ${result.error?.message ?? result.stderr.trim()}`;
  const [major = 0, minor = 0] = result.stdout.trim().split('.').map(Number);
  if (major < 20 || (major === 20 && minor < 19)) return `${node} is Node.js ${result.stdout.trim()}; PacketPony needs 20.19 or newer`;
  return undefined;
}

function main(argv: readonly string[]): number {
  // `... | head` closing the pipe must not stop an installation halfway.
  process.stdout.on('error', () => {});
  let options: InstallOptions | 'help';
  try {
    options = parseInstallArgs(argv);
  } catch (error) {
    process.stderr.write(`install: ${(error as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  if (options === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (!existsSync(join(PACKAGE_ROOT, 'dist/src/cli.js'))) {
    process.stderr.write('install: dist/src/cli.js is missing: run npm ci (or npm run build) first\n');
    return 1;
  }
  const nodeProblem = checkNode(options.node);
  if (nodeProblem !== undefined) {
    process.stderr.write(`install: ${nodeProblem}; choose one with --node PATH\n`);
    return 1;
  }
  const where = options.destdir === '' ? '' : ` under ${options.destdir}`;
  process.stdout.write(`Installing PacketPony into ${options.prefix}${where}\n`);
  try {
    install(options, (action, path, note) => process.stdout.write(`  ${action.padEnd(9)} ${path}${note ? ` (${note})` : ''}\n`));
  } catch (error) {
    process.stderr.write(`install: ${(error as Error).message}\n`);
    return 1;
  }
  if (/^\/(home|root)\//.test(options.node)) {
    process.stdout.write(`\nnote: the service cannot run ${options.node}: ProtectHome=yes hides /home and /root from it. Reinstall with --node /usr/bin/node (or wherever a system-wide Node.js 20.19+ is).\n`);
  }
  if (options.unitdir !== defaultUnitDir(options.prefix) && options.unitdir !== '/etc/systemd/system') {
    process.stdout.write(`\nnote: systemd does not look for units in ${options.unitdir} unless told to.\n`);
  }
  if (options.destdir === '') {
    process.stdout.write(`
Next:
  systemctl daemon-reload
  systemctl enable --now packetpony
  journalctl -u packetpony -f
Listeners go to ${ETC}/conf.d, one *.yaml file each (see the *.example files there); man packetpony.conf
`);
  }
  return 0;
}

// Run only as a program, not when a test imports the helpers.
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main(process.argv.slice(2));
}
