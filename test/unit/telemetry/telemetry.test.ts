/** Building sinks from settings, and rebuilding them on reload. */
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import type { LoggingSettings } from '../../../src/config/types.js';
import { PacketPonyError } from '../../../src/errors.js';
import type { LogSink } from '../../../src/telemetry/logger.js';
import { JsonFileSink } from '../../../src/telemetry/sinks/json-file.js';
import { StdoutSink } from '../../../src/telemetry/sinks/stdout.js';
import { SyslogSink } from '../../../src/telemetry/sinks/syslog-sink.js';
import { Telemetry } from '../../../src/telemetry/telemetry.js';
import { message } from './fixtures.js';

function logging(overrides: { stdout?: Partial<LoggingSettings['stdout']>; jsonlog?: Partial<LoggingSettings['jsonlog']>; syslog?: Partial<LoggingSettings['syslog']> } = {}): { logging: LoggingSettings } {
  return {
    logging: {
      stdout: { enabled: false, use_json: false, ...overrides.stdout },
      jsonlog: { enabled: false, path: '', ...overrides.jsonlog },
      syslog: { enabled: false, network: 'udp', address: '127.0.0.1:9', tag: 'packetpony', priority: 'info', ...overrides.syslog },
    },
  };
}

function tempDir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'pp-telemetry-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('with no sink enabled, stdout text lines are used', async (t) => {
  const telemetry = new Telemetry(logging(), () => []);
  t.is(telemetry.logger.sinks.length, 1);
  t.true(telemetry.logger.sinks[0] instanceof StdoutSink);
  t.false((telemetry.logger.sinks[0] as StdoutSink).json);
  await telemetry.close(0);
});

test('any combination of sinks at once; stdout only when asked for once another sink exists', async (t) => {
  const path = join(tempDir(t), 'e.json');
  const telemetry = new Telemetry(logging({ jsonlog: { enabled: true, path }, syslog: { enabled: true, priority: 'warning' } }), () => []);
  t.deepEqual(telemetry.logger.sinks.map((s) => s.name).sort(), ['jsonlog', 'syslog']);
  t.is(telemetry.logger.sinks.find((s) => s.name === 'syslog')!.threshold, 'warning');
  await telemetry.close(0);
  const all = new Telemetry(logging({ stdout: { enabled: true, use_json: true }, jsonlog: { enabled: true, path }, syslog: { enabled: true } }), () => []);
  t.deepEqual(all.logger.sinks.map((s) => s.name).sort(), ['jsonlog', 'stdout', 'syslog']);
  t.true((all.logger.sinks.find((s) => s.name === 'stdout') as StdoutSink).json);
  await all.close(0);
});

test('applySettings keeps unchanged sinks as they are and replaces the others', async (t) => {
  const dir = tempDir(t);
  const first = join(dir, 'a.json');
  const second = join(dir, 'b.json');
  const telemetry = new Telemetry(logging({ jsonlog: { enabled: true, path: first }, syslog: { enabled: true } }), () => []);
  const jsonBefore: LogSink | undefined = telemetry.logger.sinks.find((s) => s instanceof JsonFileSink);
  const syslogBefore: LogSink | undefined = telemetry.logger.sinks.find((s) => s instanceof SyslogSink);
  await telemetry.applySettings(logging({ jsonlog: { enabled: true, path: first }, syslog: { enabled: true, priority: 'err' } }));
  t.is<LogSink | undefined, LogSink | undefined>(telemetry.logger.sinks.find((s) => s instanceof JsonFileSink), jsonBefore, 'same file, same sink: nothing reopened');
  t.not<LogSink | undefined, LogSink | undefined>(telemetry.logger.sinks.find((s) => s instanceof SyslogSink), syslogBefore);
  await telemetry.applySettings(logging({ jsonlog: { enabled: true, path: second } }));
  telemetry.logger.log(message('to the second file'));
  await telemetry.close();
  t.false(readFileSync(first, 'utf8').includes('to the second file'));
  t.true(readFileSync(second, 'utf8').includes('to the second file'));
});

test('a reload whose JSON file cannot be opened throws and leaves the running sinks in place', async (t) => {
  const path = join(tempDir(t), 'ok.json');
  const telemetry = new Telemetry(logging({ jsonlog: { enabled: true, path } }), () => []);
  const before = [...telemetry.logger.sinks];
  await t.throwsAsync(telemetry.applySettings(logging({ jsonlog: { enabled: true, path: '/nonexistent-folder-pp/x.json' }, syslog: { enabled: true } })), { instanceOf: PacketPonyError });
  t.deepEqual([...telemetry.logger.sinks], before);
  telemetry.logger.log(message('still logging'));
  await telemetry.close();
  t.true(readFileSync(path, 'utf8').includes('still logging'));
});

test('a sink that drops feeds packetpony_log_events_dropped_total through the telemetry context', async (t) => {
  const telemetry = new Telemetry(logging({ jsonlog: { enabled: true, path: '/dev/full' } }), () => []);
  const original = process.stderr.write.bind(process.stderr);
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try {
    for (let i = 0; i < 5; i++) telemetry.logger.log(message(`m${i}`));
    await telemetry.close();
  } finally {
    process.stderr.write = original;
  }
  t.regex(await telemetry.metrics.render(), /packetpony_log_events_dropped_total\{sink="jsonlog"\} 5\n/);
});
