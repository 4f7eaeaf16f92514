/**
 * `npm run install-system` into a temporary DESTDIR and prefix, and the installed copy put to work:
 * its binary checks the installed configuration, its man pages render, its unit verifies, a second
 * install keeps edited configuration, logrotate's snippet gets the JSON log reopened, and every
 * system call the installed daemon makes is one the unit's SystemCallFilter allows.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { productionPackages } from '../../src/tools/production-deps.js';
import { REPO_ROOT } from '../helpers/paths.js';
import { unixReceiver } from '../helpers/unix-receiver.js';
import { alive, waitFor } from '../helpers/wait-for.js';

const INSTALLER = join(REPO_ROOT, 'dist/src/tools/install.js');

const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
  version: string;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};

interface Installed {
  readonly destdir: string;
  /** The final prefix, as written into the installed files (never created itself). */
  readonly prefix: string;
  /** A final path as staged under DESTDIR. */
  at(path: string): string;
  readonly bin: string;
  readonly lib: string;
  readonly stdout: string;
}

function tempDir(t: ExecutionContext, prefix = 'pp-install-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function runInstaller(destdir: string, prefix: string): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [INSTALLER, '--prefix', prefix, '--destdir', destdir], { encoding: 'utf8', timeout: 120_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function installInto(destdir: string): Installed {
  // A prefix that exists nowhere but in the installed files: nothing may depend on it existing.
  const prefix = `/opt/pp-test-${randomBytes(4).toString('hex')}`;
  const result = runInstaller(destdir, prefix);
  if (result.status !== 0) throw new Error(`install failed (${result.status}): ${result.stderr}${result.stdout}`);
  const at = (path: string): string => join(destdir, path);
  return { destdir, prefix, at, bin: at(`${prefix}/bin/packetpony`), lib: at(`${prefix}/lib/packetpony`), stdout: result.stdout };
}

/** A fresh installation of the test's own, for tests that change it. */
function install(t: ExecutionContext): Installed {
  return installInto(tempDir(t));
}

let shared: Installed | undefined;

/** One installation the tests that only read and run it share; removed after the last test. */
function installed(): Installed {
  shared ??= installInto(mkdtempSync(join(tmpdir(), 'pp-install-')));
  return shared;
}

test.after.always(() => {
  if (shared) rmSync(shared.destdir, { recursive: true, force: true });
});

function mode(path: string): number {
  return statSync(path).mode & 0o777;
}

function hasTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
}

test('installs the program, the unit, the man pages, the configuration and the log folder', (t) => {
  const i = installed();
  t.regex(i.stdout, /Installing PacketPony into \/opt\/pp-test-\w+ under /);

  const wrapper = readFileSync(i.bin, 'utf8');
  t.true(wrapper.startsWith('#!/bin/sh\n'));
  t.true(wrapper.includes(`exec '${process.execPath}' "$here/../lib/packetpony/dist/src/cli.js" "$@"`));
  t.is(mode(i.bin), 0o755);
  for (const rel of ['package.json', 'dist/src/cli.js', 'dist/src/child/main.js', 'schema/packetpony.schema.json', 'schema/listener.schema.json']) {
    t.true(existsSync(join(i.lib, rel)), rel);
  }
  t.false(existsSync(join(i.lib, 'dist/src/tools')), 'the installer stays out of the installed copy');
  t.false(existsSync(join(i.lib, 'dist/test')));

  // A prefix outside /usr and /usr/local: the unit goes where systemd looks.
  const unit = readFileSync(i.at('/etc/systemd/system/packetpony.service'), 'utf8');
  const commands = unit.split('\n').filter((l) => l.startsWith('Exec'));
  t.deepEqual(commands, [
    `ExecStartPre=${i.prefix}/bin/packetpony --config /etc/packetpony/packetpony.yaml --check`,
    `ExecStart=${i.prefix}/bin/packetpony --config /etc/packetpony/packetpony.yaml`,
    `ExecReload=${i.prefix}/bin/packetpony --config /etc/packetpony/packetpony.yaml --check`,
    'ExecReload=/bin/kill -HUP $MAINPID',
  ]);
  t.is(readFileSync(i.at(`${i.prefix}/share/man/man8/packetpony.8`), 'utf8'), readFileSync(join(REPO_ROOT, 'man/packetpony.8'), 'utf8'));
  t.is(readFileSync(i.at(`${i.prefix}/share/man/man5/packetpony.conf.5`), 'utf8'), readFileSync(join(REPO_ROOT, 'man/packetpony.conf.5'), 'utf8'));

  const main = readFileSync(i.at('/etc/packetpony/packetpony.yaml'), 'utf8');
  t.true(main.startsWith(`# yaml-language-server: $schema=${i.prefix}/lib/packetpony/schema/packetpony.schema.json\n`));
  t.deepEqual(readdirSync(i.at('/etc/packetpony/conf.d')).sort(), ['dns.yaml.example', 'pool.yaml.example', 'web.yaml.example']);
  t.is(mode(i.at('/etc/packetpony/packetpony.yaml')), 0o644, 'readable by the service\'s dynamic user');
  t.is(mode(i.at('/etc/packetpony')), 0o755);

  const logrotate = readFileSync(i.at('/etc/logrotate.d/packetpony'), 'utf8');
  for (const directive of ['daily', 'rotate', 'compress', 'delaycompress', 'missingok', 'notifempty', 'postrotate']) {
    t.regex(logrotate, new RegExp(`^\\s*${directive}\\b`, 'm'), directive);
  }
  t.regex(logrotate, /^\s*systemctl kill --kill-who=main --signal=SIGUSR1 packetpony\.service\b/m);
  t.is(mode(i.at('/var/log/packetpony')), 0o750);
  t.is(mode(i.at('/var/log')), 0o755, 'parents get ordinary modes');
  t.true(existsSync(i.at(`${i.prefix}/share/doc/packetpony/examples/packetpony/packetpony.yaml`)));
});

test('the installed copy carries the production dependencies, its native addon built, and no development one', (t) => {
  const i = installed();
  const expected = productionPackages(REPO_ROOT);
  t.true(expected.includes('node_modules/ajv'));
  for (const rel of expected) t.true(existsSync(join(i.lib, rel, 'package.json')), rel);
  for (const dev of Object.keys(pkg.devDependencies)) t.false(existsSync(join(i.lib, 'node_modules', dev)), dev);

  const npm = spawnSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: REPO_ROOT, encoding: 'utf8' });
  if (npm.status === 0) {
    const listed = npm.stdout.trim().split('\n').slice(1).map((p) => p.slice(REPO_ROOT.length).replace(/^\/+/, '')).sort();
    t.deepEqual(expected, listed, 'the same packages npm counts as production');
  } else {
    t.log(`npm ls unavailable (${npm.status}); compared with package.json only`);
  }

  // Each dependency resolves inside the installed copy, never from the repository.
  const req = createRequire(join(i.lib, 'package.json'));
  for (const name of Object.keys(pkg.dependencies)) t.true(req.resolve(name).startsWith(`${i.lib}/`), name);
  // Our addon, built for this Node, loads from the installed copy and has its unix sockets.
  const addon = join(i.lib, 'dist/src/native/addon.js');
  const script = `import(${JSON.stringify(addon)}).then((m) => { const a = m.nativeAddon(); if (a === null) throw new Error(m.nativeAddonMissing()); a.unixClose(a.unixOpen()); })`;
  const load = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  t.is(load.status, 0, load.stderr);
});

test('the installed binary reports its version and checks the installed configuration', (t) => {
  const i = installed();
  const version = spawnSync(i.bin, ['--version'], { encoding: 'utf8' });
  t.is(version.status, 0, version.stderr);
  t.is(version.stdout.trim(), `packetpony ${pkg.version}`);

  const confDir = i.at('/etc/packetpony/conf.d');
  const check = spawnSync(i.bin, ['--check', '--config', i.at('/etc/packetpony/packetpony.yaml'), '--conf-dir', confDir], { encoding: 'utf8' });
  t.is(check.status, 0, check.stderr);
  t.is(check.stdout.trim(), 'configuration OK: 0 listeners');

  // The shipped examples, enabled the way their comments say (in a copy: the installation is shared).
  const enabledDir = tempDir(t, 'pp-conf.d-');
  for (const name of readdirSync(confDir)) copyFileSync(join(confDir, name), join(enabledDir, name.replace(/\.example$/, '')));
  const enabled = spawnSync(i.bin, ['--check', '--config', i.at('/etc/packetpony/packetpony.yaml'), '--conf-dir', enabledDir], { encoding: 'utf8' });
  t.is(enabled.status, 0, enabled.stderr);
  t.is(enabled.stdout.trim(), 'configuration OK: 3 listeners (dns, pool, web)');
  t.is(enabled.stderr, '', 'no warning either');
});

test('both installed man pages render', (t) => {
  const i = installed();
  const pages = [i.at(`${i.prefix}/share/man/man8/packetpony.8`), i.at(`${i.prefix}/share/man/man5/packetpony.conf.5`)];
  const renderers: Array<[string, (page: string) => string[]]> = [
    ['man', (page) => ['-l', page]],
    ['mandoc', (page) => ['-Tascii', page]],
    ['groff', (page) => ['-man', '-Tascii', '-ww', page]],
  ];
  const available = renderers.filter(([tool]) => hasTool(tool));
  if (available.length === 0) {
    t.log('skipped: none of man, mandoc, groff is installed');
    return t.pass();
  }
  for (const [tool, args] of available) {
    for (const [page, title] of [[pages[0]!, 'PACKETPONY(8)'], [pages[1]!, 'PACKETPONY.CONF(5)']] as const) {
      const result = spawnSync(tool, args(page), { encoding: 'utf8', env: { ...process.env, MANWIDTH: '80', MANPAGER: 'cat', PAGER: 'cat' } });
      t.is(result.status, 0, `${tool} ${page}: ${result.stderr}`);
      const text = result.stdout.replace(/.\x08/g, ''); // overstrike bold
      t.true(text.includes(title), `${tool}: ${title}`);
      t.true(text.includes('SEE ALSO'), tool);
      t.is(result.stderr, '', `${tool} warns about ${page}`);
    }
  }
});

test('systemd-analyze verify accepts the installed unit, man pages included', (t) => {
  if (!hasTool('systemd-analyze')) {
    t.log('skipped: systemd-analyze is not installed (Debian: package systemd)');
    return t.pass();
  }
  const i = installed();
  // systemd looks for the commands at their final paths; point them into the DESTDIR.
  const unit = readFileSync(i.at('/etc/systemd/system/packetpony.service'), 'utf8').replaceAll(`=${i.prefix}/`, `=${i.destdir}${i.prefix}/`);
  const dir = tempDir(t, 'pp-unit-');
  writeFileSync(join(dir, 'packetpony.service'), unit);
  const result = spawnSync('systemd-analyze', ['verify', join(dir, 'packetpony.service')], {
    encoding: 'utf8',
    env: { ...process.env, MANPATH: i.at(`${i.prefix}/share/man`) },
  });
  t.is(result.stdout + result.stderr, '');
  t.is(result.status, 0);
});

test('a second install replaces the program and keeps the configuration an administrator edited', (t) => {
  const i = install(t);
  const mainFile = i.at('/etc/packetpony/packetpony.yaml');
  const edited = `${readFileSync(mainFile, 'utf8')}# edited by the administrator\n`;
  writeFileSync(mainFile, edited);
  writeFileSync(join(i.lib, 'dist/src/cli.js'), 'broken');
  const again = runInstaller(i.destdir, i.prefix);
  t.is(again.status, 0, again.stderr);
  t.is(readFileSync(mainFile, 'utf8'), edited);
  t.regex(again.stdout, new RegExp(`kept\\s+/etc/packetpony/packetpony\\.yaml \\(yours differs from this version's, which is at ${i.prefix}/share/doc/packetpony/examples/packetpony/packetpony\\.yaml\\)`));
  t.regex(again.stdout, /unchanged\s+\/etc\/logrotate\.d\/packetpony/);
  t.not(readFileSync(join(i.lib, 'dist/src/cli.js'), 'utf8'), 'broken');
  t.false(existsSync(`${i.lib}.old`) || existsSync(`${i.lib}.new`), 'no staging folder left behind');
  t.is(spawnSync(i.bin, ['--version']).status, 0);
});

test('the installer refuses a relative prefix and an unknown option, without touching anything', (t) => {
  const destdir = tempDir(t);
  for (const args of [['--prefix', 'usr/local'], ['--frobnicate']]) {
    const result = spawnSync(process.execPath, [INSTALLER, ...args, '--destdir', destdir], { encoding: 'utf8' });
    t.is(result.status, 2, args.join(' '));
    t.regex(result.stderr, /Usage: npm run install-system/);
  }
  t.deepEqual(readdirSync(destdir), []);
});

// ---- the installed daemon at work ----

interface Running {
  readonly process: ChildProcess;
  readonly lines: string[];
  /** The supervisor's PID (under strace, the traced node process, not strace). */
  pid(): number;
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  readonly exited: Promise<number | null>;
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Runs `command` (the installed binary, possibly under strace); kills what is left at the end. */
function run(t: ExecutionContext, command: string[], env: NodeJS.ProcessEnv = process.env, traced = false): Running {
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env });
  const lines: string[] = [];
  let stderr = '';
  let partial = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop()!;
    lines.push(...parts);
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const pid = (): number => (traced ? childrenOf(child.pid!)[0] ?? -1 : child.pid!);
  const family = new Set<number>();
  const remember = (): void => {
    for (const p of [child.pid!, ...childrenOf(child.pid!)]) {
      family.add(p);
      for (const grandchild of childrenOf(p)) family.add(grandchild);
    }
  };
  t.teardown(async () => {
    remember();
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const p of family) {
      try {
        await waitFor(() => !alive(p), `process ${p} to exit`, 3000);
      } catch {
        process.kill(p, 'SIGKILL');
      }
    }
  });
  const waitForLine = async (pattern: RegExp, timeoutMs = 30_000): Promise<string> => {
    const line = await waitFor(() => {
      if (child.exitCode !== null && !lines.some((l) => pattern.test(l))) throw new Error(`exited (${child.exitCode}) before ${pattern}: ${stderr}\n${lines.join('\n')}`);
      return lines.find((l) => pattern.test(l));
    }, `${pattern}; so far:\n${lines.join('\n')}\n${stderr}`, timeoutMs);
    remember();
    return line;
  };
  return { process: child, lines, pid, waitForLine, exited };
}

function echoServers(t: ExecutionContext): Promise<{ tcp: number; udp: number }> {
  const tcp = net.createServer((socket) => socket.pipe(socket));
  const udp = dgram.createSocket('udp4');
  udp.on('message', (message, from) => udp.send(message, from.port, from.address));
  t.teardown(() => {
    tcp.close();
    udp.close();
  });
  return Promise.all([
    new Promise<number>((resolve) => tcp.listen(0, '127.0.0.1', () => resolve((tcp.address() as net.AddressInfo).port))),
    new Promise<number>((resolve) => udp.bind(0, '127.0.0.1', () => resolve(udp.address().port))),
  ]).then(([tcpPort, udpPort]) => ({ tcp: tcpPort, udp: udpPort }));
}

/** One TCP round trip and one UDP round trip through the daemon's listeners. */
async function traffic(tcpPort: number, udpPort: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const socket = net.connect(tcpPort, '127.0.0.1', () => socket.end('ping'));
    let got = '';
    socket.setEncoding('utf8').on('data', (d: string) => (got += d));
    socket.on('close', () => (got === 'ping' ? resolve() : reject(new Error(`tcp echo: "${got}"`))));
    socket.on('error', reject);
  });
  await new Promise<void>((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    const retry = setInterval(() => socket.send('ping', udpPort, '127.0.0.1'), 500);
    socket.on('message', (message) => {
      clearInterval(retry);
      socket.close();
      if (message.toString() === 'ping') resolve();
      else reject(new Error(`udp echo: "${message.toString()}"`));
    });
    socket.send('ping', udpPort, '127.0.0.1');
  });
}

/** A main file and two listeners (TCP, UDP) forwarding to the echo servers, in a temp folder. */
function daemonConfig(t: ExecutionContext, targets: { tcp: number; udp: number }, logging: string): string {
  const dir = tempDir(t, 'pp-etc-');
  mkdirSync(join(dir, 'conf.d'));
  writeFileSync(join(dir, 'packetpony.yaml'), `${logging}\ndefaults:\n  allowlist: ["127.0.0.0/8"]\n`);
  writeFileSync(join(dir, 'conf.d/echo-tcp.yaml'), `protocol: tcp\nlisten_address: "127.0.0.1:0"\ntarget_address: "127.0.0.1:${targets.tcp}"\n`);
  writeFileSync(join(dir, 'conf.d/echo-udp.yaml'), `protocol: udp\nlisten_address: "127.0.0.1:0"\ntarget_address: "127.0.0.1:${targets.udp}"\n`);
  return join(dir, 'packetpony.yaml');
}

function portOf(line: string): number {
  return Number(/address=\S*:(\d+)/.exec(line)![1]);
}

test('logrotate with the installed snippet rotates the JSON log and the daemon reopens it', async (t) => {
  if (!hasTool('logrotate')) {
    t.log('skipped: logrotate is not installed (Debian: apt-get install logrotate)');
    return t.pass();
  }
  const i = installed();
  const targets = await echoServers(t);
  const logDir = tempDir(t, 'pp-log-');
  const config = daemonConfig(t, targets, `logging:\n  stdout:\n    enabled: true\n  jsonlog:\n    enabled: true\n    path: "${logDir}/events.json"`);
  const daemon = run(t, [i.bin, '--config', config]);
  const tcpPort = portOf(await daemon.waitForLine(/listener echo-tcp up /));
  const udpPort = portOf(await daemon.waitForLine(/listener echo-udp up /));
  await traffic(tcpPort, udpPort);
  await waitFor(() => existsSync(join(logDir, 'events.json')) && readFileSync(join(logDir, 'events.json'), 'utf8').includes('"event_type":"close"'), 'a close event in the JSON log');

  // The snippet as installed, with the log folder moved to the test's and systemd's signal delivery
  // done by hand: `systemctl kill --kill-who=main` sends the signal to exactly this process.
  const snippet = readFileSync(i.at('/etc/logrotate.d/packetpony'), 'utf8')
    .replaceAll('/var/log/packetpony/', `${logDir}/`)
    .replace(/systemctl kill --kill-who=main --signal=SIGUSR1 packetpony\.service/, `kill -USR1 ${daemon.pid()}`);
  t.not(snippet, readFileSync(i.at('/etc/logrotate.d/packetpony'), 'utf8'));
  const work = tempDir(t, 'pp-logrotate-');
  writeFileSync(join(work, 'packetpony'), snippet, { mode: 0o644 });
  const rotate = spawnSync('logrotate', ['--force', '--state', join(work, 'state'), join(work, 'packetpony')], { encoding: 'utf8' });
  t.is(rotate.status, 0, rotate.stderr);
  t.is(rotate.stderr, '');

  t.true(readFileSync(join(logDir, 'events.json.1'), 'utf8').includes('"event_type":"close"'), 'the old events stay in the rotated file');
  // A whole first line: a read may catch the daemon's first write half done.
  const reopened = await waitFor(() => {
    const text = existsSync(join(logDir, 'events.json')) ? readFileSync(join(logDir, 'events.json'), 'utf8') : '';
    return text.includes('\n') ? text : undefined;
  }, 'the daemon to write a first line to the new log file');
  const firstLine = reopened.split('\n')[0]!;
  t.true(firstLine.includes('log files reopened'), `the first line of the new file: ${firstLine}`);
  await traffic(tcpPort, udpPort);
  await waitFor(() => readFileSync(join(logDir, 'events.json'), 'utf8').includes('"event_type":"open"'), 'new events in the new file');

  daemon.process.kill('SIGTERM');
  t.is(await daemon.exited, 0);
});

// ---- the unit's system call filter against what node really calls ----

const groupCache = new Map<string, string[]>();

/** The system calls of a systemd-analyze group, nested groups expanded. */
function syscallGroup(group: string): string[] {
  const cached = groupCache.get(group);
  if (cached) return cached;
  const out = spawnSync('systemd-analyze', ['syscall-filter', group], { encoding: 'utf8' }).stdout;
  const calls = out.split('\n').slice(1).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
    .flatMap((name) => (name.startsWith('@') ? syscallGroup(name) : [name]));
  groupCache.set(group, calls);
  return calls;
}

function allowedByUnit(unit: string): Set<string> {
  const allowed = new Set<string>();
  const denied = new Set<string>();
  for (const [, list] of unit.matchAll(/^SystemCallFilter=(.*)$/gm)) {
    const deny = list!.startsWith('~');
    for (const item of list!.replace(/^~/, '').split(/\s+/).filter(Boolean)) {
      for (const call of item.startsWith('@') ? syscallGroup(item) : [item]) (deny ? denied : allowed).add(call);
    }
  }
  for (const call of denied) allowed.delete(call);
  return allowed;
}

test('every system call of the installed daemon at work is allowed by the unit\'s SystemCallFilter', async (t) => {
  for (const tool of ['strace', 'systemd-analyze']) {
    if (!hasTool(tool)) {
      t.log(`skipped: ${tool} is not installed`);
      return t.pass();
    }
  }
  if (spawnSync('strace', ['-f', '-qq', '-o', '/dev/null', 'true']).status !== 0) {
    t.log('skipped: strace cannot trace here (ptrace not permitted)');
    return t.pass();
  }
  const i = installed();
  const allowed = allowedByUnit(readFileSync(i.at('/etc/systemd/system/packetpony.service'), 'utf8'));
  t.true(allowed.has('read') && allowed.has('pkey_alloc') && !allowed.has('setrlimit') && !allowed.has('mount'), 'the filter is understood');

  const targets = await echoServers(t);
  const work = tempDir(t, 'pp-strace-');
  // The syslog sink on a local datagram socket too, as with network "unix" and /dev/log.
  const syslogPath = join(work, 'dev-log');
  unixReceiver(t, syslogPath, () => {});
  const config = daemonConfig(t, targets, [
    'logging:',
    '  stdout: { enabled: true }',
    `  jsonlog: { enabled: true, path: "${join(work, 'events.json')}" }`,
    `  syslog: { enabled: true, network: unix, address: "${syslogPath}" }`,
    'metrics:',
    '  prometheus: { enabled: true, listen_address: "127.0.0.1:0" }',
  ].join('\n'));
  const trace = join(work, 'trace');
  const daemon = run(t, ['strace', '-f', '-qq', '-o', trace, i.bin, '--config', config], process.env, true);
  const tcpPort = portOf(await daemon.waitForLine(/listener echo-tcp up /, 60_000));
  const udpPort = portOf(await daemon.waitForLine(/listener echo-udp up /, 60_000));
  const metrics = /address=(\S+)/.exec(await daemon.waitForLine(/metrics server started/))![1]!;
  await traffic(tcpPort, udpPort);
  const scrape = await fetch(`http://${metrics}/metrics`);
  t.is(scrape.status, 200);
  t.regex(await scrape.text(), /packetpony_child_open_fds/);
  const supervisor = daemon.pid();
  t.true(supervisor > 0);
  process.kill(supervisor, 'SIGHUP');
  await daemon.waitForLine(/configuration reloaded/);
  process.kill(supervisor, 'SIGUSR1');
  await daemon.waitForLine(/log files reopened/);
  process.kill(supervisor, 'SIGTERM');
  t.is(await daemon.exited, 0, 'strace exits with the daemon\'s status');

  const used = new Set<string>();
  for (const line of readFileSync(trace, 'utf8').split('\n')) {
    const call = /^\d+\s+([a-z0-9_]+)\(/.exec(line)?.[1];
    if (call) used.add(call);
  }
  t.true(used.has('execve') && used.has('accept4') && used.size > 40, `the trace is complete (${used.size} calls)`);
  t.deepEqual([...used].filter((call) => !allowed.has(call)).sort(), [], 'system calls the unit would refuse');
  t.log(`${used.size} distinct system calls, all allowed`);
});

// ---- readiness ----

// The unit is Type=notify: without READY=1 systemd would give up on the start after TimeoutStartSec.
test('the installed daemon tells systemd when it is ready and when it stops', async (t) => {
  const i = installed();
  const targets = await echoServers(t);
  const notifyPath = join(tempDir(t, 'pp-notify-'), 'notify');
  const received: string[] = [];
  unixReceiver(t, notifyPath, (message) => received.push(message.toString()));

  const daemon = run(t, [i.bin, '--config', daemonConfig(t, targets, 'logging:\n  stdout:\n    enabled: true')], { ...process.env, NOTIFY_SOCKET: notifyPath });
  await daemon.waitForLine(/listener echo-tcp up /);
  await daemon.waitForLine(/listener echo-udp up /);
  await waitFor(() => received.some((m) => m.split('\n').includes('READY=1')), 'READY=1', 15_000);
  daemon.process.kill('SIGTERM');
  t.is(await daemon.exited, 0);
  t.true(received.some((m) => m.split('\n').includes('STOPPING=1')), `STOPPING=1 among ${JSON.stringify(received)}`);
});
