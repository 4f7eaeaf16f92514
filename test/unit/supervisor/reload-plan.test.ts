import test from 'ava';
import { join } from 'node:path';
import { readConfig } from '../../../src/config/load.js';
import type { ListenerConfig } from '../../../src/config/types.js';
import { planReload } from '../../../src/supervisor/reload-plan.js';
import { configDir } from '../../helpers/config-dir.js';

const listener = (port: number, extra = ''): string =>
  `protocol: tcp\nlisten_address: "127.0.0.1:${port}"\ntarget_address: "127.0.0.1:9"\nallowlist: ["127.0.0.1"]\n${extra}`;

function running(dir: string): Map<string, ListenerConfig> {
  const report = readConfig({ configFile: join(dir, 'packetpony.yaml') });
  return new Map(report.listeners.map((l) => [l.name, l]));
}

test('unchanged, changed, added and removed listeners are told apart', async (t) => {
  const dir = configDir(t, {
    'packetpony.yaml': '',
    'conf.d/same.yaml': listener(7001),
    'conf.d/edit.yaml': listener(7002),
    'conf.d/gone.yaml': listener(7003),
  });
  const before = running(dir);
  const { writeFileSync, rmSync } = await import('node:fs');
  writeFileSync(join(dir, 'conf.d/edit.yaml'), listener(7002, 'rate_limits:\n  max_total_connections: 5\n'));
  rmSync(join(dir, 'conf.d/gone.yaml'));
  writeFileSync(join(dir, 'conf.d/new.yaml'), listener(7004));
  const plan = planReload(before, readConfig({ configFile: join(dir, 'packetpony.yaml') }));
  t.deepEqual(plan.unchanged, ['same']);
  t.deepEqual(plan.change.map((l) => l.name), ['edit']);
  t.deepEqual(plan.add.map((l) => l.name), ['new']);
  t.deepEqual(plan.remove, ['gone']);
  t.deepEqual(plan.kept, []);
});

test('a broken file keeps its last good version while other files still change', async (t) => {
  const dir = configDir(t, { 'packetpony.yaml': '', 'conf.d/a.yaml': listener(7001), 'conf.d/b.yaml': listener(7002) });
  const before = running(dir);
  const { writeFileSync } = await import('node:fs');
  writeFileSync(join(dir, 'conf.d/a.yaml'), 'protocol: [broken\n');
  writeFileSync(join(dir, 'conf.d/b.yaml'), listener(7005));
  const plan = planReload(before, readConfig({ configFile: join(dir, 'packetpony.yaml') }));
  t.deepEqual(plan.kept, ['a']);
  t.deepEqual(plan.change.map((l) => l.listen.port), [7005]);
  t.deepEqual(plan.remove, []);
});

test('a newcomer that clashes with a kept listener is left out', async (t) => {
  const dir = configDir(t, { 'packetpony.yaml': '', 'conf.d/a.yaml': listener(7001) });
  const before = running(dir);
  const { writeFileSync } = await import('node:fs');
  writeFileSync(join(dir, 'conf.d/a.yaml'), 'protocol: tcpx\n');
  writeFileSync(join(dir, 'conf.d/b.yaml'), listener(7001));
  const plan = planReload(before, readConfig({ configFile: join(dir, 'packetpony.yaml') }));
  t.deepEqual(plan.kept, ['a']);
  t.deepEqual(plan.conflicts, ['b']);
  t.deepEqual(plan.add, []);
});

test('a main file with errors changes nothing', async (t) => {
  const dir = configDir(t, { 'packetpony.yaml': '', 'conf.d/a.yaml': listener(7001) });
  const before = running(dir);
  const { writeFileSync, rmSync } = await import('node:fs');
  writeFileSync(join(dir, 'packetpony.yaml'), 'server:\n  shutdown_timeout: 30\n');
  rmSync(join(dir, 'conf.d/a.yaml'));
  const plan = planReload(before, readConfig({ configFile: join(dir, 'packetpony.yaml') }));
  t.is(plan.main, undefined);
  t.deepEqual([plan.add, plan.change, plan.remove], [[], [], []]);
});
