import test from 'ava';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { isDropInName, listDropIns, stemOf } from '../../../src/config/conf-dir.js';

test('only *.yaml and *.yml files are listeners', (t) => {
  for (const name of ['web.yaml', 'dns.yml', '10-web.yaml', 'a.b.yaml']) t.true(isDropInName(name), name);
  for (const name of ['web.json', 'README', 'web.yaml.example', 'web.conf']) t.false(isDropInName(name), name);
});

test('editor and package-manager leftovers are ignored', (t) => {
  const leftovers = [
    '.web.yaml', '.web.yaml.swp', 'web.yaml~', 'web.yaml.swp', 'web.yaml.bak', 'web.yaml.dpkg-old',
    'web.yaml.dpkg-new', 'web.yaml.dpkg-dist', 'web.dpkg-tmp.yaml', 'web.yaml.rpmnew', 'web.yaml.rpmsave',
    'web.yaml.rpmorig', '#web.yaml#', '.#web.yaml',
  ];
  for (const name of leftovers) t.false(isDropInName(name), name);
});

test('the listener name defaults to the file stem', (t) => {
  t.is(stemOf('web.yaml'), 'web');
  t.is(stemOf('dns.yml'), 'dns');
  t.is(stemOf('a.b.yaml'), 'a.b');
});

test('listing: name order, files only, symlinks followed, dangling links skipped', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pp-confdir-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const name of ['b.yaml', 'a.yml', 'C.yaml', 'web.yaml~', '.hidden.yaml', 'notes.txt']) writeFileSync(join(dir, name), '');
  mkdirSync(join(dir, 'folder.yaml'));
  writeFileSync(join(dir, 'target.txt'), '');
  symlinkSync(join(dir, 'target.txt'), join(dir, 'linked.yaml'));
  symlinkSync(join(dir, 'missing'), join(dir, 'dangling.yaml'));
  const listing = listDropIns(dir);
  t.is(listing.kind, 'ok');
  if (listing.kind !== 'ok') return;
  t.deepEqual(listing.files.map((f) => basename(f)), ['C.yaml', 'a.yml', 'b.yaml', 'linked.yaml']);
});

test('listing a missing folder says so', (t) => {
  t.is(listDropIns(join(tmpdir(), 'pp-no-such-folder-', String(process.pid))).kind, 'missing');
});
