import test from 'ava';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigWatcher } from '../../../src/supervisor/config-watcher.js';
import { configDir } from '../../helpers/config-dir.js';
import { waitFor } from '../../helpers/wait-for.js';

async function watching(t: Parameters<typeof configDir>[0]): Promise<{ dir: string; reasons: string[] }> {
  const dir = configDir(t, { 'packetpony.yaml': '', 'conf.d/a.yaml': 'protocol: tcp\n' });
  const reasons: string[] = [];
  const watcher = new ConfigWatcher(join(dir, 'packetpony.yaml'), join(dir, 'conf.d'), (reason) => reasons.push(reason), 100);
  t.teardown(() => watcher.close());
  await watcher.start();
  return { dir, reasons };
}

test('an editor save (temp file renamed over the original) is one reload', async (t) => {
  const { dir, reasons } = await watching(t);
  writeFileSync(join(dir, 'conf.d/.a.yaml.swp'), 'swap');
  writeFileSync(join(dir, 'conf.d/a.yaml.tmp'), 'protocol: udp\n');
  renameSync(join(dir, 'conf.d/a.yaml.tmp'), join(dir, 'conf.d/a.yaml'));
  writeFileSync(join(dir, 'conf.d/a.yaml~'), 'backup');
  await waitFor(() => reasons.length > 0, 'a reload');
  // A second, unrelated change proves the watcher is still quiet about the ignored names.
  writeFileSync(join(dir, 'conf.d/b.yml'), 'protocol: tcp\n');
  await waitFor(() => reasons.length > 1, 'the second reload');
  t.is(reasons.length, 2);
  t.regex(reasons[0]!, /a\.yaml/);
  t.regex(reasons[1]!, /b\.yml/);
});

test('ignored names alone never trigger a reload', async (t) => {
  const { dir, reasons } = await watching(t);
  for (const name of ['.hidden.yaml', 'x.yaml~', 'x.yaml.swp', 'x.yaml.bak', 'x.yaml.dpkg-new', 'x.yaml.rpmnew', 'notes.txt']) {
    writeFileSync(join(dir, 'conf.d', name), 'x');
  }
  writeFileSync(join(dir, 'packetpony.yaml'), 'server:\n  name: x\n');
  await waitFor(() => reasons.length > 0, 'the main-file reload');
  t.is(reasons.length, 1);
  t.regex(reasons[0]!, /packetpony\.yaml/);
});

test('a burst of saves is one reload', async (t) => {
  const { dir, reasons } = await watching(t);
  for (let i = 0; i < 10; i++) writeFileSync(join(dir, 'conf.d', `f${i}.yaml`), 'protocol: tcp\n');
  await waitFor(() => reasons.length > 0, 'a reload');
  writeFileSync(join(dir, 'conf.d/last.yaml'), 'protocol: tcp\n');
  await waitFor(() => reasons.length > 1, 'the next reload');
  t.regex(reasons[0]!, /^10 changes/);
});

test('the main file saved by an editor (renamed over) is one reload; other files in its folder are none', async (t) => {
  const { dir, reasons } = await watching(t);
  // A busy neighbour (a log kept next to the main file) must not count, however often it is written.
  for (let i = 0; i < 50; i++) writeFileSync(join(dir, 'events.json'), `{"n":${i}}\n`, { flag: 'a' });
  writeFileSync(join(dir, 'packetpony.yaml.tmp'), 'server:\n  name: y\n');
  renameSync(join(dir, 'packetpony.yaml.tmp'), join(dir, 'packetpony.yaml'));
  await waitFor(() => reasons.length > 0, 'the reload');
  // And the watch outlives the rename: a second save is seen too.
  writeFileSync(join(dir, 'packetpony.yaml'), 'server:\n  name: z\n');
  await waitFor(() => reasons.length > 1, 'the second reload');
  t.is(reasons.length, 2);
  t.regex(reasons[0]!, /packetpony\.yaml/);
  t.notRegex(reasons.join(' '), /events\.json/);
});
