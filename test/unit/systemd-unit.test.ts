/**
 * systemd/packetpony.service: what the unit promises (readiness, reload with a check first, an
 * unprivileged user with one capability, the hardening), `systemd-analyze verify` silent on it, and
 * its `systemd-analyze security` exposure kept where it is.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseDuration } from '../../src/config/units.js';
import { rewriteUnit } from '../../src/tools/install.js';
import { CLI, REPO_ROOT } from '../helpers/paths.js';

const UNIT_TEXT = readFileSync(join(REPO_ROOT, 'systemd/packetpony.service'), 'utf8');
/** The exposure systemd-analyze gave the unit when it was written (1.4); a change above fails. */
const MAX_EXPOSURE = 1.5;

type Unit = Map<string, Array<[string, string]>>;

function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let current: Array<[string, string]> = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) {
      current = [];
      unit.set(header[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    current.push([line.slice(0, eq), line.slice(eq + 1)]);
  }
  return unit;
}

const unit = parseUnit(UNIT_TEXT);

function values(section: string, key: string): string[] {
  return (unit.get(section) ?? []).filter(([k]) => k === key).map(([, v]) => v);
}

function value(section: string, key: string): string | undefined {
  return values(section, key).at(-1);
}

test('the service runs the installed binary on /etc/packetpony/packetpony.yaml, checked first', (t) => {
  const config = '--config /etc/packetpony/packetpony.yaml';
  t.deepEqual(values('Service', 'ExecStart'), [`/usr/local/bin/packetpony ${config}`]);
  t.deepEqual(values('Service', 'ExecStartPre'), [`/usr/local/bin/packetpony ${config} --check`]);
  // Two ExecReload= lines run in order and the second only if the first succeeded.
  t.deepEqual(values('Service', 'ExecReload'), [`/usr/local/bin/packetpony ${config} --check`, '/bin/kill -HUP $MAINPID']);
  t.is(value('Service', 'Restart'), 'on-failure');
});

test('readiness comes from the supervisor alone', (t) => {
  t.is(value('Service', 'Type'), 'notify');
  t.is(value('Service', 'NotifyAccess'), 'main');
});

test('stopping: SIGTERM to the supervisor, which drains for longer than the default shutdown_timeout', (t) => {
  t.is(value('Service', 'KillMode'), 'mixed');
  const schema = JSON.parse(readFileSync(join(REPO_ROOT, 'schema/packetpony.schema.json'), 'utf8')) as {
    properties: { server: { properties: { shutdown_timeout: { default: string } } } };
  };
  const drain = parseDuration(schema.properties.server.properties.shutdown_timeout.default)!;
  const stop = parseDuration(value('Service', 'TimeoutStopSec')!)!;
  // The supervisor kills a child 3 s after the drain deadline, then flushes its logs (2 s at most).
  t.true(stop >= drain + 5000, `TimeoutStopSec ${stop} ms must exceed shutdown_timeout ${drain} ms + 5 s`);
});

test('start limits live in [Unit], where systemd reads them', (t) => {
  t.truthy(value('Unit', 'StartLimitIntervalSec'));
  t.truthy(value('Unit', 'StartLimitBurst'));
  t.is(value('Service', 'StartLimitIntervalSec'), undefined);
  t.is(value('Service', 'StartLimitBurst'), undefined);
});

test('an unprivileged user with CAP_NET_BIND_SERVICE and nothing else', (t) => {
  t.is(value('Service', 'DynamicUser'), 'yes');
  t.is(value('Service', 'User'), undefined);
  t.is(value('Service', 'AmbientCapabilities'), 'CAP_NET_BIND_SERVICE');
  t.is(value('Service', 'CapabilityBoundingSet'), 'CAP_NET_BIND_SERVICE');
  t.is(value('Service', 'NoNewPrivileges'), 'yes');
});

test('hardened, writing only to its log folder, and without MemoryDenyWriteExecute (V8 needs W+X)', (t) => {
  for (const [key, expected] of [
    ['ProtectSystem', 'strict'],
    ['ProtectHome', 'yes'],
    ['PrivateTmp', 'yes'],
    ['PrivateDevices', 'yes'],
    ['LogsDirectory', 'packetpony'],
  ] as const) {
    t.is(value('Service', key), expected, key);
  }
  t.deepEqual(value('Service', 'RestrictAddressFamilies')!.split(/\s+/).sort(), ['AF_INET', 'AF_INET6', 'AF_UNIX']);
  t.true(values('Service', 'SystemCallFilter').some((v) => v.split(/\s+/).includes('@system-service')));
  t.is(value('Service', 'SystemCallErrorNumber'), 'EPERM');
  t.false(/^\s*MemoryDenyWriteExecute\s*=/m.test(UNIT_TEXT));
});

test('enough descriptors for two per TCP connection and one per UDP session', (t) => {
  // 10,000 UDP sessions (the default cap) or 32,000 TCP connections per listener process.
  t.true(Number(value('Service', 'LimitNOFILE')) >= 65_536);
});

function hasTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
}

/** The unit with its commands pointed at the built CLI, and the man pages where `man` finds them. */
function unitUnderTest(t: { teardown(fn: () => void): void }): { unit: string; env: NodeJS.ProcessEnv } {
  const dir = mkdtempSync(join(tmpdir(), 'pp-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'packetpony.service');
  writeFileSync(path, rewriteUnit(UNIT_TEXT, CLI));
  for (const [page, section] of [['packetpony.8', 'man8'], ['packetpony.conf.5', 'man5']]) {
    mkdirSync(join(dir, 'man', section!), { recursive: true });
    copyFileSync(join(REPO_ROOT, 'man', page!), join(dir, 'man', section!, page!));
  }
  return { unit: path, env: { ...process.env, MANPATH: join(dir, 'man') } };
}

test('systemd-analyze verify has nothing to say about the unit', (t) => {
  if (!hasTool('systemd-analyze')) {
    t.log('skipped: systemd-analyze is not installed (Debian: package systemd)');
    return t.pass();
  }
  const { unit: path, env } = unitUnderTest(t);
  t.not(readFileSync(path, 'utf8'), UNIT_TEXT, 'the commands point at the built CLI');
  const result = spawnSync('systemd-analyze', ['verify', path], { encoding: 'utf8', env });
  // verify exits 0 on unknown keys and unparsable values, and only says so: silence is the test.
  t.is(result.stdout + result.stderr, '');
  t.is(result.status, 0);
});

test(`systemd-analyze security rates the unit at ${MAX_EXPOSURE} or better`, (t) => {
  if (!hasTool('systemd-analyze')) {
    t.log('skipped: systemd-analyze is not installed (Debian: package systemd)');
    return t.pass();
  }
  const help = spawnSync('systemd-analyze', ['security', '--help'], { encoding: 'utf8' });
  if (!`${help.stdout}${help.stderr}`.includes('--offline')) {
    t.log('skipped: this systemd-analyze cannot rate a unit file offline (systemd < 250)');
    return t.pass();
  }
  const { unit: path, env } = unitUnderTest(t);
  const result = spawnSync('systemd-analyze', ['security', '--offline=true', '--no-pager', path], { encoding: 'utf8', env });
  const score = /Overall exposure level for packetpony\.service: ([\d.]+)/.exec(result.stdout);
  if (!score) return t.fail(`no score in: ${result.stdout}${result.stderr}`);
  t.log(`systemd-analyze security: ${score[0]}`);
  t.true(Number(score[1]) <= MAX_EXPOSURE, score[0]);
});
