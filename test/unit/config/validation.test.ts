/**
 * One fixture per validation rule. Each fixture's first line says what must be reported:
 *   # expect: [FILE:]LINE:COL FIELD: message
 * and the test asserts that exactly one error is reported, at that place, with that message.
 */
import test from 'ava';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readConfig } from '../../../src/config/load.js';
import { displayPath } from '../../../src/config/yaml-source.js';
import { FIXTURES } from '../../helpers/paths.js';

interface Expectation {
  file?: string;
  line: number;
  col: number;
  field: string;
  message: string;
}

function expectationOf(path: string): Expectation {
  const first = readFileSync(path, 'utf8').split('\n')[0]!;
  const match = /^# expect: (?:(\S+):)?(\d+):(\d+) ([^:]*): (.*)$/.exec(first);
  if (!match) throw new Error(`${path}: first line must be "# expect: ..."`);
  return { file: match[1], line: Number(match[2]), col: Number(match[3]), field: match[4]!, message: match[5]! };
}

const listenerFixtures = join(FIXTURES, 'invalid-listener');
for (const name of readdirSync(listenerFixtures).sort()) {
  test(`conf.d file: ${name}`, (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'pp-validate-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    mkdirSync(join(dir, 'conf.d'));
    writeFileSync(join(dir, 'packetpony.yaml'), '');
    cpSync(join(listenerFixtures, name), join(dir, 'conf.d', name));
    const expected = expectationOf(join(listenerFixtures, name));

    const report = readConfig({ configFile: join(dir, 'packetpony.yaml') });
    const errors = report.issues.filter((i) => i.severity === 'error');
    t.is(errors.length, 1, JSON.stringify(errors, null, 2));
    const [error] = errors;
    t.is(error!.file, displayPath(join(dir, 'conf.d', name)));
    t.deepEqual([error!.line, error!.col, error!.field], [expected.line, expected.col, expected.field]);
    t.true(error!.message.includes(expected.message), `message: ${error!.message}`);
    t.false(report.files.find((f) => f.path.endsWith(name))!.ok);
  });
}

const mainFixtures = join(FIXTURES, 'invalid-main');
for (const name of readdirSync(mainFixtures).sort()) {
  test(`main file: ${name}`, (t) => {
    const caseDir = join(mainFixtures, name);
    const expected = expectationOf(join(caseDir, 'packetpony.yaml'));
    const report = readConfig({ configFile: join(caseDir, 'packetpony.yaml') });
    const errors = report.issues.filter((i) => i.severity === 'error');
    t.is(errors.length, 1, JSON.stringify(errors, null, 2));
    const [error] = errors;
    t.is(error!.file, displayPath(join(caseDir, expected.file ?? 'packetpony.yaml')));
    t.deepEqual([error!.line, error!.col, error!.field], [expected.line, expected.col, expected.field]);
    t.true(error!.message.includes(expected.message), `message: ${error!.message}`);
  });
}
