/**
 * The programs the benchmark drives: found on PATH, installed from Debian's packages when missing
 * (iperf3 and wrk are needed; nginx, haproxy and socat are optional extras), and the small C load
 * clients built from test/bench/c into the git-ignored .bench/ folder. Nothing here fails the run
 * when an optional program is missing: its targets are left out and the report says so.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export interface Tools {
  readonly iperf3: string | null;
  readonly wrk: string | null;
  readonly nginx: string | null;
  /** Path of ngx_stream_module.so when the stream module is a loadable module. */
  readonly nginxStreamModule: string | null;
  readonly haproxy: string | null;
  readonly socat: string | null;
  readonly udpClient: string | null;
  readonly udpEcho: string | null;
  /** The LD_PRELOAD shim that spreads the load's source addresses (c/many-sources.c). */
  readonly manySources: string | null;
  readonly notes: string[];
}

export function which(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin'])) {
    const path = join(dir, name);
    if (dir !== '' && existsSync(path)) return path;
  }
  return null;
}

export function aptInstall(packages: string[], notes: string[]): void {
  if (packages.length === 0) return;
  if (process.getuid?.() !== 0 || which('apt-get') === null) {
    notes.push(`not installed (needs root and apt-get): ${packages.join(', ')}`);
    return;
  }
  process.stderr.write(`bench: installing ${packages.join(' ')} with apt-get…\n`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  let r = spawnSync('apt-get', ['install', '-y', '-qq', ...packages], { env, stdio: 'ignore', timeout: 300_000 });
  if (r.status !== 0) {
    spawnSync('apt-get', ['update', '-qq'], { env, stdio: 'ignore', timeout: 300_000 });
    r = spawnSync('apt-get', ['install', '-y', '-qq', ...packages], { env, stdio: 'ignore', timeout: 300_000 });
  }
  if (r.status !== 0) notes.push(`apt-get could not install: ${packages.join(', ')}`);
}

function buildC(root: string, name: string, notes: string[], library = false): string | null {
  const source = join(root, 'test/bench/c', `${name}.c`);
  const binDir = join(root, '.bench/bin');
  const binary = join(binDir, library ? `${name}.so` : name);
  mkdirSync(binDir, { recursive: true });
  if (existsSync(binary) && statSync(binary).mtimeMs >= statSync(source).mtimeMs) return binary;
  const cc = which('cc') ?? which('gcc');
  if (cc === null) {
    notes.push(`no C compiler: ${name} not built`);
    return null;
  }
  try {
    execFileSync(cc, [...(library ? ['-shared', '-fPIC'] : []), '-O2', '-Wall', '-o', binary, source, ...(library ? ['-ldl'] : [])], { stdio: 'pipe' });
    return binary;
  } catch (err) {
    notes.push(`building ${name} failed: ${(err as Error).message.split('\n')[0]}`);
    return null;
  }
}

export interface ToolOptions {
  /** Install missing Debian packages (default true; --no-install turns it off). */
  readonly install: boolean;
}

export function findTools(root: string, options: ToolOptions): Tools {
  const notes: string[] = [];
  if (options.install) {
    const missing: string[] = [];
    if (which('iperf3') === null) missing.push('iperf3');
    if (which('wrk') === null) missing.push('wrk');
    aptInstall(missing, notes);
    // The optional comparison targets: tried once, never required.
    const extras: string[] = [];
    if (which('nginx') === null) extras.push('nginx-light', 'libnginx-mod-stream');
    else if (streamModule() === null && !nginxHasStatic()) extras.push('libnginx-mod-stream');
    if (which('haproxy') === null) extras.push('haproxy');
    if (which('socat') === null) extras.push('socat');
    aptInstall(extras, notes);
  }
  const nginx = which('nginx');
  const nginxStreamModule = nginx === null ? null : streamModule();
  if (nginx !== null && nginxStreamModule === null && !nginxHasStatic()) notes.push('nginx has no stream module: nginx target left out');
  return {
    iperf3: which('iperf3'),
    wrk: which('wrk'),
    nginx,
    nginxStreamModule,
    haproxy: which('haproxy'),
    socat: which('socat'),
    udpClient: buildC(root, 'udp-client', notes),
    udpEcho: buildC(root, 'udp-echo', notes),
    manySources: buildC(root, 'many-sources', notes, true),
    notes,
  };
}

function streamModule(): string | null {
  for (const path of ['/usr/lib/nginx/modules/ngx_stream_module.so', '/usr/lib64/nginx/modules/ngx_stream_module.so']) {
    if (existsSync(path)) return path;
  }
  return null;
}

/** Whether nginx was built with the stream module compiled in. */
export function nginxHasStatic(): boolean {
  const nginx = which('nginx');
  if (nginx === null) return false;
  const r = spawnSync(nginx, ['-V'], { encoding: 'utf8' });
  return /--with-stream(?!=dynamic)(\s|$)/.test(`${r.stdout}${r.stderr}`);
}
