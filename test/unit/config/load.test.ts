import test from 'ava';
import { join } from 'node:path';
import { hostname } from 'node:os';
import { loadConfig, readConfig } from '../../../src/config/load.js';
import { ConfigInvalidError } from '../../../src/errors.js';
import { configDir } from '../../helpers/config-dir.js';

const WEB = `protocol: tcp
listen_address: "127.0.0.1:8080"
target_address: "127.0.0.1:9090"
allowlist: ["10.0.0.0/8"]
`;

test('schema defaults fill every listener field', (t) => {
  const dir = configDir(t, { 'packetpony.yaml': '', 'conf.d/web.yaml': WEB });
  const { config } = loadConfig({ configFile: join(dir, 'packetpony.yaml') });
  const [web] = config.listeners;
  t.is(web!.name, 'web');
  t.deepEqual(web!.tcp, { connect_timeout: 10_000, read_timeout: 0, write_timeout: 0, idle_timeout: 0 });
  t.is(web!.rate_limits.action, 'drop');
  t.is(web!.rate_limits.max_connections_per_ip, 0);
  t.deepEqual(web!.udp, {
    session_timeout: 30_000,
    buffer_size: 4096,
    logging: {
      log_session_start: true,
      log_session_close: true,
      periodic_log_interval: 300_000,
      periodic_log_bytes: 100 * 1024 * 1024,
      min_log_duration: 0,
      min_log_bytes: 0,
    },
  });
  t.deepEqual(web!.listen, { host: '127.0.0.1', port: 8080 });
  t.deepEqual(web!.allowlist, ['10.0.0.0/8']);
  t.true(Object.isFrozen(web) && Object.isFrozen(web!.tcp));
  t.is(config.server.name, hostname());
  t.is(config.server.shutdown_timeout, 30_000);
  t.false(config.logging.stdout.enabled);
});

test('defaults: merged key by key, the listener wins, lists are replaced', (t) => {
  const dir = configDir(t, {
    'packetpony.yaml': `defaults:
  allowlist: ["127.0.0.1"]
  rate_limits:
    max_total_connections: 100
    action: log_only
  tcp:
    idle_timeout: 5m
    read_timeout: 30s
`,
    'conf.d/a.yaml': WEB.replace('allowlist: ["10.0.0.0/8"]\n', '') + 'rate_limits:\n  max_total_connections: 5\ntcp:\n  idle_timeout: 1m\n',
    'conf.d/b.yaml': WEB.replace('8080', '8081'),
  });
  const { config } = loadConfig({ configFile: join(dir, 'packetpony.yaml') });
  const [a, b] = config.listeners;
  t.deepEqual(a!.allowlist, ['127.0.0.1/32']);
  t.is(a!.rate_limits.max_total_connections, 5);
  t.is(a!.rate_limits.action, 'log_only');
  t.is(a!.tcp.idle_timeout, 60_000);
  t.is(a!.tcp.read_timeout, 30_000);
  t.deepEqual(b!.allowlist, ['10.0.0.0/8']);
  t.is(b!.rate_limits.max_total_connections, 100);
  t.is(b!.tcp.idle_timeout, 300_000);
});

test('a partial udp.logging block keeps the other keys at their defaults', (t) => {
  const dir = configDir(t, {
    'packetpony.yaml': '',
    'conf.d/dns.yaml': WEB.replace('tcp', 'udp') + 'udp:\n  logging:\n    log_session_start: false\n',
  });
  const { config } = loadConfig({ configFile: join(dir, 'packetpony.yaml') });
  t.false(config.listeners[0]!.udp.logging.log_session_start);
  t.true(config.listeners[0]!.udp.logging.log_session_close);
  t.is(config.listeners[0]!.udp.logging.periodic_log_interval, 300_000);
});

test('udp.buffer_size: every value a user writes for "the largest datagram" is accepted, up to 1MB', (t) => {
  for (const [written, bytes] of [['65535', 65535], ['65536', 65536], ['"64KB"', 65536], ['"64KiB"', 65536], ['"128KB"', 131072], ['"1MB"', 1048576]] as const) {
    const dir = configDir(t, { 'packetpony.yaml': '', 'conf.d/dns.yaml': WEB.replace('tcp', 'udp') + `udp:\n  buffer_size: ${written}\n` });
    const { config } = loadConfig({ configFile: join(dir, 'packetpony.yaml') });
    t.is(config.listeners[0]!.udp.buffer_size, bytes, written);
  }
});

test('shared_limits: the store, the password from its file, defaults; shared listeners carry it, others do not', (t) => {
  const dir = configDir(t, {
    'packetpony.yaml': 'server:\n  name: edge-1\nshared_limits:\n  store: "rediss://pp@[::1]:6380/3"\n  password_file: secret\n  on_store_down: Closed\n',
    secret: 's3cret\nignored\n',
    'conf.d/web.yaml': WEB + 'rate_limits:\n  shared: true\n  max_connections_per_ip: 3\n',
    'conf.d/own.yaml': WEB.replace('8080', '8081') + 'rate_limits:\n  max_connections_per_ip: 3\n',
  });
  const { config } = loadConfig({ configFile: join(dir, 'packetpony.yaml') });
  t.deepEqual(config.shared_limits, {
    store: 'rediss://pp@[::1]:6380/3',
    host: '::1',
    port: 6380,
    db: 3,
    username: 'pp',
    password: 's3cret',
    tls: true,
    instance: 'edge-1',
    sync_interval: 100,
    on_store_down: 'closed',
    key_prefix: 'packetpony',
  });
  const [own, web] = config.listeners;
  t.is(web!.shared_limits, config.shared_limits);
  t.true(web!.shared);
  t.is(own!.shared_limits, null);
  t.false(own!.shared);
});

test('protocol and action are accepted in any case and normalised', (t) => {
  const dir = configDir(t, {
    'packetpony.yaml': '',
    'conf.d/web.yaml': WEB.replace('tcp', 'TCP') + 'rate_limits:\n  max_bandwidth_per_ip: 10MB\n  bandwidth_window: 1m\n  action: THROTTLE\n  throttle_minimum: 1MB\n',
  });
  const { config } = loadConfig({ configFile: join(dir, 'packetpony.yaml') });
  t.is(config.listeners[0]!.protocol, 'tcp');
  t.is(config.listeners[0]!.rate_limits.action, 'throttle');
  t.is(config.listeners[0]!.rate_limits.throttle_minimum, 1024 * 1024);
});

test('inline listeners (the original layout) and conf.d files together, main file first', (t) => {
  const dir = configDir(t, {
    'packetpony.yaml': `listeners:\n  - name: inline\n${WEB.replace('8080', '8079').replace(/^/gm, '    ').trimEnd()}\n`,
    'conf.d/z.yaml': WEB,
  });
  const { config } = loadConfig({ configFile: join(dir, 'packetpony.yaml') });
  t.deepEqual(config.listeners.map((l) => l.name), ['inline', 'z']);
});

test('conf_dir is resolved against the main file; --conf-dir wins', (t) => {
  const dir = configDir(t, {
    'etc/packetpony.yaml': 'conf_dir: listeners\n',
    'etc/listeners/a.yaml': WEB,
    'other/b.yaml': WEB,
  });
  t.deepEqual(loadConfig({ configFile: join(dir, 'etc/packetpony.yaml') }).config.listeners.map((l) => l.name), ['a']);
  const override = loadConfig({ configFile: join(dir, 'etc/packetpony.yaml'), confDir: join(dir, 'other') });
  t.deepEqual(override.config.listeners.map((l) => l.name), ['b']);
  t.is(override.config.conf_dir, join(dir, 'other'));
});

test('a missing conf.d is fine when the main file has listeners', (t) => {
  const dir = configDir(t, {
    'packetpony.yaml': `listeners:\n  - name: inline\n${WEB.replace(/^/gm, '    ').trimEnd()}\n`,
  });
  t.is(loadConfig({ configFile: join(dir, 'packetpony.yaml') }).config.listeners.length, 1);
});

test('an existing but empty conf.d is valid, with a warning', (t) => {
  const dir = configDir(t, { 'packetpony.yaml': '', 'conf.d/README': 'nothing here' });
  const { config, warnings } = loadConfig({ configFile: join(dir, 'packetpony.yaml') });
  t.is(config.listeners.length, 0);
  t.regex(warnings[0]!.message, /no listener is configured/);
});

test('an empty allowlist is a warning, not an error', (t) => {
  const dir = configDir(t, { 'packetpony.yaml': '', 'conf.d/web.yaml': WEB.replace('allowlist: ["10.0.0.0/8"]', 'allowlist: []') });
  const { config, warnings } = loadConfig({ configFile: join(dir, 'packetpony.yaml') });
  t.deepEqual(config.listeners[0]!.allowlist, []);
  t.is(warnings.length, 1);
  t.regex(warnings[0]!.message, /every client is denied/);
  t.is(warnings[0]!.line, 4);
});

test('SPEC dual-stack pair: [::] next to 0.0.0.0 on the same port is bound IPv6-only', (t) => {
  const dir = configDir(t, {
    'packetpony.yaml': '',
    'conf.d/v4.yaml': WEB.replace('127.0.0.1:8080', '0.0.0.0:8080'),
    'conf.d/v6.yaml': WEB.replace('"127.0.0.1:8080"', '"[::]:8080"'),
    'conf.d/solo.yaml': WEB.replace('"127.0.0.1:8080"', '"[::]:8081"'),
  });
  const { config } = loadConfig({ configFile: join(dir, 'packetpony.yaml') });
  const byName = Object.fromEntries(config.listeners.map((l) => [l.name, l]));
  t.true(byName.v6!.ipv6_only);
  t.false(byName.solo!.ipv6_only);
  t.false(byName.v4!.ipv6_only);
});

test('tcp and udp listeners may share a port', (t) => {
  const dir = configDir(t, { 'packetpony.yaml': '', 'conf.d/a.yaml': WEB, 'conf.d/b.yaml': WEB.replace('tcp', 'udp') });
  t.is(loadConfig({ configFile: join(dir, 'packetpony.yaml') }).config.listeners.length, 2);
});

test('every error of every file is reported at once, and good files still count as good', (t) => {
  const dir = configDir(t, {
    'packetpony.yaml': '',
    'conf.d/good.yaml': WEB,
    'conf.d/bad1.yaml': WEB.replace('8080', '8081').replace('tcp', 'tcpp'),
    'conf.d/bad2.yaml': WEB.replace('8080', '8082') + 'tcp:\n  idle_timeout: 60\nrate_limits:\n  max_total_connections: 0\n',
  });
  const report = readConfig({ configFile: join(dir, 'packetpony.yaml') });
  t.is(report.errorCount, 3);
  t.deepEqual(report.files.map((f) => [f.path.split('/').pop(), f.ok]), [['packetpony.yaml', true], ['bad1.yaml', false], ['bad2.yaml', false], ['good.yaml', true]]);
  t.deepEqual(report.listeners.map((l) => l.name), ['good']);
  const error = t.throws(() => loadConfig({ configFile: join(dir, 'packetpony.yaml') }), { instanceOf: ConfigInvalidError });
  t.is(error!.code, 'PP_ERR_CONFIG_INVALID');
  t.is(error!.issues.filter((i) => i.severity === 'error').length, 3);
});

test('an unreadable main file is a clear error', (t) => {
  const error = t.throws(() => readConfig({ configFile: '/nonexistent/packetpony.yaml' }));
  t.regex(error!.message, /cannot read configuration: no such file/);
});
