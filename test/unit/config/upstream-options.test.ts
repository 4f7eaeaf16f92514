/**
 * The listener keys of issue 11 as the config pipeline turns them into a ListenerConfig: several
 * targets, balance, health checks, PROXY protocol both ways, the denylist. The mistakes each rule
 * catches are fixtures in test/fixtures/invalid-listener/ (validation.test.ts); this file checks
 * what valid files become, the defaults, and the warnings.
 */
import test from 'ava';
import { join } from 'node:path';
import { loadConfig } from '../../../src/config/load.js';
import { usesTargetPool } from '../../../src/config/types.js';
import { configDir } from '../../helpers/config-dir.js';

const HEAD = 'protocol: tcp\nlisten_address: "127.0.0.1:8080"\nallowlist: ["0.0.0.0/0"]\n';

function load(t: Parameters<typeof configDir>[0], body: string, main = '') {
  const dir = configDir(t, { 'packetpony.yaml': main, 'conf.d/web.yaml': body });
  return loadConfig({ configFile: join(dir, 'packetpony.yaml') });
}

test('a single target_address: one target, no pool, every new feature off', (t) => {
  const { config, warnings } = load(t, `${HEAD}target_address: "backend.example.com:80"\n`);
  const [web] = config.listeners;
  t.deepEqual(warnings, []);
  t.is(web!.target_address, 'backend.example.com:80');
  t.deepEqual(web!.target, { host: 'backend.example.com', port: 80 });
  t.deepEqual(web!.targets, [{ address: 'backend.example.com:80', endpoint: { host: 'backend.example.com', port: 80 }, backup: false }]);
  t.is(web!.balance, 'round_robin');
  t.is(web!.health_check, null);
  t.is(web!.proxy_protocol, 'off');
  t.is(web!.accept_proxy_protocol, null);
  t.deepEqual(web!.denylist, []);
  t.false(usesTargetPool(web!));
});

test('targets: addresses, backups, balance; target_address names them all for messages', (t) => {
  const { config, warnings } = load(
    t,
    `${HEAD}targets:\n  - address: "10.0.0.1:80"\n  - address: "[2001:DB8::1]:80"\n  - address: "spare.example:8080"\n    backup: true\nbalance: source_hash\n`,
  );
  const [web] = config.listeners;
  t.deepEqual(warnings, []);
  t.deepEqual(
    web!.targets.map((x) => [x.address, x.endpoint.host, x.endpoint.port, x.backup]),
    [
      ['10.0.0.1:80', '10.0.0.1', 80, false],
      ['[2001:DB8::1]:80', '2001:db8::1', 80, false],
      ['spare.example:8080', 'spare.example', 8080, true],
    ],
  );
  t.is(web!.target_address, '10.0.0.1:80,[2001:DB8::1]:80,spare.example:8080');
  t.deepEqual(web!.target, { host: '10.0.0.1', port: 80 });
  t.is(web!.balance, 'source_hash');
  t.true(usesTargetPool(web!));
  t.true(Object.isFrozen(web!.targets[0]));
});

test('a list of one target behaves as target_address; balance there is warned about', (t) => {
  const { config, warnings } = load(t, `${HEAD}targets:\n  - address: "10.0.0.1:80"\nbalance: least_connections\n`);
  t.false(usesTargetPool(config.listeners[0]!));
  t.is(warnings.length, 1);
  t.is(warnings[0]!.field, 'balance');
  t.regex(warnings[0]!.message, /no effect with a single target/);
});

test('health_check: the schema defaults fill a partial section; one target with checks uses the pool', (t) => {
  const { config } = load(t, `${HEAD}target_address: "10.0.0.1:80"\nhealth_check:\n  fall: 1\n  send: "PING\\r\\n"\n  expect: "\\x00PONG"\n`);
  const [web] = config.listeners;
  t.deepEqual(web!.health_check, { interval: 5000, timeout: 2000, rise: 2, fall: 1, send: 'PING\r\n', expect: '\u0000PONG' });
  t.true(usesTargetPool(web!));
});

test('health_check from the main file defaults applies to every listener', (t) => {
  const { config } = load(t, `${HEAD}target_address: "10.0.0.1:80"\n`, 'defaults:\n  health_check:\n    interval: 1s\n');
  t.is(config.listeners[0]!.health_check!.interval, 1000);
  t.is(config.listeners[0]!.health_check!.rise, 2);
});

test('proxy_protocol and accept_proxy_protocol: canonical trusted networks, default header timeout', (t) => {
  const { config } = load(
    t,
    `${HEAD}target_address: "10.0.0.1:80"\nproxy_protocol: v2\naccept_proxy_protocol:\n  trusted: ["10.1.0.0/16", "::ffff:192.0.2.1", "2001:db8::7"]\n`,
  );
  const [web] = config.listeners;
  t.is(web!.proxy_protocol, 'v2');
  t.deepEqual(web!.accept_proxy_protocol, { trusted: ['10.1.0.0/16', '::ffff:c000:201/128', '2001:db8::7/128'], header_timeout: 3000 });
});

test('UDP takes proxy_protocol v2', (t) => {
  const { config } = load(t, 'protocol: udp\nlisten_address: "127.0.0.1:5353"\ntarget_address: "10.0.0.1:53"\nallowlist: ["0.0.0.0/0"]\nproxy_protocol: v2\n');
  t.is(config.listeners[0]!.proxy_protocol, 'v2');
});

test('denylist: canonical CIDRs (a mapped entry stays mapped; the matcher treats it as IPv4)', (t) => {
  const { config } = load(t, `${HEAD}target_address: "10.0.0.1:80"\ndenylist: ["192.0.2.0/24", "::ffff:198.51.100.7", "2001:DB8::/32"]\n`);
  t.deepEqual(config.listeners[0]!.denylist, ['192.0.2.0/24', '::ffff:c633:6407/128', '2001:db8::/32']);
});
