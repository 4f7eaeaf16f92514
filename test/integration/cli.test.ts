// Serial: each test spawns node, and a burst of spawns on a 2-core machine only makes them all slow.
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultConfigFile } from '../../src/config/load.js';
import { configDir } from '../helpers/config-dir.js';
import { FIXTURES, REPO_ROOT } from '../helpers/paths.js';
import { runCli } from '../helpers/run-cli.js';

const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };

test.serial('--help lists every option and exits 0', async (t) => {
  for (const flag of ['--help', '-help', '-h']) {
    const result = await runCli([flag]);
    t.is(result.code, 0, flag);
    for (const option of ['--config FILE', '--conf-dir DIR', '--check', '--version', '--help']) t.true(result.stdout.includes(option), option);
  }
});

test.serial('--version and -version print the package version', async (t) => {
  for (const flag of ['--version', '-version']) {
    const result = await runCli([flag]);
    t.is(result.code, 0);
    t.is(result.stdout.trim(), `packetpony ${pkg.version}`);
  }
});

test.serial('an unknown option prints usage and exits 2', async (t) => {
  const result = await runCli(['--frobnicate']);
  t.is(result.code, 2);
  t.regex(result.stderr, /unknown option "--frobnicate"/);
  t.regex(result.stderr, /Usage: packetpony/);
  t.is(result.stdout, '');
});

test.serial('an option without its value, or a stray argument, exits 2', async (t) => {
  t.is((await runCli(['--config'])).code, 2);
  t.is((await runCli(['config.yaml'])).code, 2);
  t.is((await runCli(['--check=yes'])).code, 2);
});

test.serial('the repository example passes --check, in every spelling of --config', async (t) => {
  for (const args of [['--config', 'packetpony.yaml'], ['-config', 'packetpony.yaml'], ['--config=packetpony.yaml'], ['-c', 'packetpony.yaml']]) {
    const result = await runCli([...args, '--check']);
    t.is(result.code, 0, result.stderr);
    t.regex(result.stdout, /^configuration OK: 1 listener \(metrics-proxy\)\n$/);
  }
});

test.serial('--conf-dir replaces the drop-in folder', async (t) => {
  const dir = configDir(t, {
    'a.yaml': 'protocol: tcp\nlisten_address: "127.0.0.1:7001"\ntarget_address: "127.0.0.1:7002"\nallowlist: ["127.0.0.1"]\n',
    'b.yaml': 'protocol: udp\nlisten_address: "127.0.0.1:7001"\ntarget_address: "127.0.0.1:7002"\nallowlist: ["127.0.0.1"]\n',
  });
  const result = await runCli(['-config', 'packetpony.yaml', '-conf-dir', dir, '-check']);
  t.is(result.code, 0, result.stderr);
  t.is(result.stdout, 'configuration OK: 2 listeners (a, b)\n');
});

test.serial('--check on an invalid configuration prints every error to stderr and exits 1', async (t) => {
  const dir = configDir(t, {
    'packetpony.yaml': 'server:\n  shutdown_timeout: 30\n',
    'conf.d/web.yaml': 'protocol: tcp\nlisten_address: "127.0.0.1"\ntarget_address: "127.0.0.1:80"\nallowlist: ["10.0.0.1/8"]\n',
  });
  const result = await runCli(['--config', join(dir, 'packetpony.yaml'), '--check']);
  t.is(result.code, 1);
  t.is(result.stdout, '');
  const lines = result.stderr.trim().split('\n');
  t.regex(lines[0]!, /packetpony\.yaml:2:21: server\.shutdown_timeout: a duration needs a unit: write "30s"/);
  t.regex(lines[1]!, /conf\.d\/web\.yaml:2:17: listen_address: "127\.0\.0\.1": missing port/);
  t.regex(lines[2]!, /conf\.d\/web\.yaml:4:13: allowlist\[0\]: "10\.0\.0\.1\/8" has host bits set: write "10\.0\.0\.0\/8"/);
  t.is(lines[3], 'packetpony: configuration invalid: 3 errors');
  t.false(result.stderr.includes('    at '), 'no stack trace');
});

test.serial('starting the daemon with an invalid configuration exits 1 with the same messages', async (t) => {
  const dir = configDir(t, { 'packetpony.yaml': 'listeners:\n  - name: x\n    protocol: sctp\n' });
  const check = await runCli(['--config', join(dir, 'packetpony.yaml'), '--check']);
  const start = await runCli(['--config', join(dir, 'packetpony.yaml')]);
  t.is(start.code, 1);
  t.is(start.stderr, check.stderr);
  t.regex(start.stderr, /protocol: must be one of tcp, udp \(got "sctp"\)/);
});

test.serial('a missing main file is a clear error, exit 1', async (t) => {
  const result = await runCli(['--config', '/nonexistent/packetpony.yaml', '--check']);
  t.is(result.code, 1);
  t.is(result.stderr, 'packetpony: /nonexistent/packetpony.yaml: cannot read configuration: no such file\n');
});

test.serial('without --config: packetpony.yaml, or the original config.yaml when only that exists', (t) => {
  const both = configDir(t, { 'packetpony.yaml': '', 'config.yaml': '' });
  const original = configDir(t, { 'config.yaml': '' });
  const none = configDir(t, {});
  t.is(defaultConfigFile(both), join(both, 'packetpony.yaml'));
  t.is(defaultConfigFile(original), join(original, 'config.yaml'));
  t.is(defaultConfigFile(none), join(none, 'packetpony.yaml'));
});

// Every configuration example in SPEC.md, kept as a fixture: the valid ones pass --check, the ones
// SPEC marks WRONG fail with the right message (except the unquoted duration, see ORIGINAL.md).
const specDir = join(FIXTURES, 'spec');
for (const name of readdirSync(specDir).filter((n) => n.endsWith('.yaml')).sort()) {
  test.serial(`SPEC.md example ${name}`, async (t) => {
    const expect = /^# expect: (.*)$/m.exec(readFileSync(join(specDir, name), 'utf8'))![1]!;
    const result = await runCli(['--config', join(specDir, name), '--conf-dir', join(specDir, 'empty-conf.d'), '--check']);
    if (expect === 'ok') {
      t.is(result.code, 0, result.stderr);
      t.regex(result.stdout, /^configuration OK: /);
    } else {
      t.is(result.code, 1);
      t.true(result.stderr.includes(expect.replace(/^error: /, '')), result.stderr);
    }
  });
}
