/**
 * The package as npm ships it: `npm pack` of this checkout, the tarball installed with
 * `npm install` in an empty folder (dependencies from the registry; its install script builds the
 * native addon from the shipped sources, for the Node running the test), and the installed program
 * put to work — `packetpony --check`, then a short TCP relay and UDP relay on loopback. A file the
 * build needs but package.json's `files` leaves out shows here as an addon that is not built.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon } from '../helpers/daemon.js';
import { REPO_ROOT } from '../helpers/paths.js';
import { connect, readAll, startEchoServer } from '../helpers/servers.js';
import { startUdpBackend, udpClient } from '../helpers/udp.js';
import { alive, waitFor } from '../helpers/wait-for.js';
import { PUBLIC_PATH } from '../helpers/platform-path.js';

/** Packing and installing (a compile of the addon included) on a busy two-core machine. */
const INSTALL_TIMEOUT_MS = 240_000;

interface Run {
  readonly status: number | null;
  readonly output: string;
}

/** Processes of this file still running; stopped by PID (their process group) should it end early. */
const running = new Set<number>();
process.once('exit', () => {
  for (const pid of running) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
});

/**
 * Runs a command to its end, stdout and stderr together. In a process group of its own, so that on
 * the deadline npm and whatever it started (node-gyp, make, the compiler) are stopped together.
 */
function run(command: string, args: string[], cwd: string, timeoutMs = INSTALL_TIMEOUT_MS): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    const pid = child.pid!;
    running.add(pid);
    const timer = setTimeout(() => process.kill(-pid, 'SIGKILL'), timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      running.delete(pid);
      reject(error);
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      running.delete(pid);
      resolve({ status: status ?? (signal === null ? null : -1), output: signal === null ? output : `${output}\n(${command} stopped by ${signal})` });
    });
  });
}

interface Installed {
  /** The installed package's root: <app>/node_modules/packetpony. */
  readonly root: string;
  readonly cli: string;
  /** What npm pack and npm install said. */
  readonly log: string;
}

const work = mkdtempSync(join(tmpdir(), 'pp-package-'));
test.after.always(() => rmSync(work, { recursive: true, force: true }));

let installing: Promise<Installed> | undefined;

/** Packs this checkout and installs the tarball, once for all tests of this file. */
function installed(): Promise<Installed> {
  installing ??= (async () => {
    const packDir = join(work, 'pack');
    const app = join(work, 'app');
    mkdirSync(packDir);
    mkdirSync(app);
    // --ignore-scripts: `prepare` would compile dist/ again under the other test files running
    // from it; npm test has just built it.
    const pack = await run('npm', ['pack', '--ignore-scripts', '--pack-destination', packDir, '--loglevel=error'], REPO_ROOT);
    if (pack.status !== 0) throw new Error(`npm pack failed (${pack.status}):\n${pack.output}`);
    const tarball = readdirSync(packDir).find((name) => name.endsWith('.tgz'));
    if (tarball === undefined) throw new Error(`npm pack left no tarball:\n${pack.output}`);
    // An application that depends on PacketPony and allows its install script, as npm's
    // allowScripts names a tarball (what `npm install-scripts approve` writes): by its path.
    const spec = `file:${join(packDir, tarball)}`;
    writeFileSync(join(app, 'package.json'), `${JSON.stringify({ name: 'pp-package-test', version: '1.0.0', private: true, allowScripts: { [spec]: true } }, null, 2)}\n`);
    const install = await run('npm', ['install', spec, '--no-audit', '--no-fund', '--foreground-scripts', '--loglevel=warn'], app);
    const log = `${pack.output}\n${install.output}`;
    if (install.status !== 0) throw new Error(`npm install of the tarball failed (${install.status}):\n${log}`);
    if (/not yet covered by allowScripts/.test(install.output)) throw new Error(`npm did not take the allowScripts entry ${spec}:\n${log}`);
    const root = join(app, 'node_modules', 'packetpony');
    return { root, cli: join(root, 'dist', 'src', 'cli.js'), log };
  })();
  return installing;
}

function files(t: ExecutionContext): Promise<Installed> {
  t.timeout(INSTALL_TIMEOUT_MS + 60_000);
  return installed();
}

test('the tarball carries every source the native build needs, and the install builds the addon for this Node', async (t) => {
  const pkg = await files(t);
  const gyp = JSON.parse(readFileSync(join(REPO_ROOT, 'src/native/binding.gyp'), 'utf8')) as { targets: Array<{ sources: string[] }> };
  for (const source of [...gyp.targets[0]!.sources, 'addon.h', 'binding.gyp', 'build.mjs']) {
    t.true(existsSync(join(pkg.root, 'src/native', source)), `src/native/${source} is in the package`);
  }
  // Loaded in a process of its own, from the installed copy: the answer is the installed build's.
  const addon = join(pkg.root, 'dist/src/native/addon.js');
  const probe = await run(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(addon)}); process.stdout.write(m.nativeAddonMissing() || 'loaded')`], work, 30_000);
  t.is(probe.output, 'loaded', `the installed addon loads (install log:\n${pkg.log})`);
});

test('packetpony --check from the installed package', async (t) => {
  const pkg = await files(t);
  t.true(existsSync(join(pkg.root, '..', '.bin', 'packetpony')), 'npm linked the bin');
  const dir = join(work, 'check');
  mkdirSync(join(dir, 'conf.d'), { recursive: true });
  writeFileSync(join(dir, 'packetpony.yaml'), 'logging:\n  stdout:\n    enabled: true\n');
  writeFileSync(join(dir, 'conf.d', 'web.yaml'), 'protocol: tcp\nlisten_address: "127.0.0.1:0"\ntarget_address: "127.0.0.1:9"\nallowlist: ["127.0.0.1"]\n');
  writeFileSync(join(dir, 'conf.d', 'dns.yaml'), 'protocol: udp\nlisten_address: "127.0.0.1:0"\ntarget_address: "127.0.0.1:9"\nallowlist: ["127.0.0.1"]\n');
  const check = await run(process.execPath, [pkg.cli, '--check', '--config', join(dir, 'packetpony.yaml')], dir, 30_000);
  t.is(check.status, 0, check.output);
  t.is(check.output.trim(), 'configuration OK: 2 listeners (dns, web)');

  writeFileSync(join(dir, 'conf.d', 'bad.yaml'), 'protocol: sctp\nlisten_address: "127.0.0.1:0"\ntarget_address: "127.0.0.1:9"\n');
  const bad = await run(process.execPath, [pkg.cli, '--check', '--config', join(dir, 'packetpony.yaml')], dir, 30_000);
  t.not(bad.status, 0, 'a bad file is refused');
  t.regex(bad.output, /bad\.yaml:1:\d+: protocol/);
});

test('a TCP relay and a UDP relay from the installed package, on the batched paths', async (t) => {
  const pkg = await files(t);
  const tcpEcho = await startEchoServer(t);
  const udpEcho = await startUdpBackend(t);
  const daemon = await startDaemon(
    t,
    {
      'conf.d/web.yaml': `protocol: tcp\nlisten_address: "127.0.0.1:0"\ntarget_address: "127.0.0.1:${tcpEcho}"\nallowlist: ["127.0.0.1"]\n`,
      'conf.d/dns.yaml': `protocol: udp\nlisten_address: "127.0.0.1:0"\ntarget_address: "127.0.0.1:${udpEcho.port}"\nallowlist: ["127.0.0.1"]\n`,
    },
    [],
    {},
    pkg.cli,
  );
  const tcpPort = await daemon.port('web');
  const udpPort = await daemon.port('dns');

  const socket = await connect(tcpPort);
  const echoed = readAll(socket);
  socket.end('through the installed package over TCP');
  t.is((await echoed).toString(), 'through the installed package over TCP');

  const client = await udpClient(t, udpPort);
  t.is((await client.request('through the installed package over UDP')).toString(), 'through the installed package over UDP');

  // The installed addon is the one in use: the child says at start, before its first session
  // opens, when UDP falls back to Node's slower path.
  await daemon.waitForLine(/Connection opened: listener=dns /);
  if (PUBLIC_PATH) {
    // No batched path on public APIs (by design): the addon shows in the sockets it bound instead.
    t.regex(await daemon.waitForLine(/listener dns up /), / socket=addon-descriptor$/);
  } else {
    t.false(daemon.lines.some((line) => /UDP goes through Node's dgram/.test(line)), daemon.lines.join('\n'));
  }

  process.kill(daemon.pid, 'SIGTERM');
  t.like(await daemon.exited, { code: 0 });
  await waitFor(() => !alive(daemon.pid), 'the daemon to be gone');
});
