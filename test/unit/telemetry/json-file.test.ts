import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { PacketPonyError } from '../../../src/errors.js';
import { JsonFileSink } from '../../../src/telemetry/sinks/json-file.js';
import { waitFor } from '../../helpers/wait-for.js';
import { message, recordingContext, tcpClose } from './fixtures.js';

function tempDir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'pp-jsonlog-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function lines(path: string): string[] {
  return existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean) : [];
}

test('appends one JSON object per line, keeping what the file held', async (t) => {
  const path = join(tempDir(t), 'events.json');
  const context = recordingContext();
  const first = new JsonFileSink({ path, context });
  first.write(message('one'));
  await first.close();
  const second = new JsonFileSink({ path, context });
  for (let i = 0; i < 1500; i++) second.write(tcpClose({ source_port: i + 1 }));
  await second.close();
  const written = lines(path);
  t.is(written.length, 1501);
  t.is((JSON.parse(written[0]!) as { message: string }).message, 'one');
  t.deepEqual(written.slice(1).map((l) => (JSON.parse(l) as { source_port: number }).source_port), Array.from({ length: 1500 }, (_, i) => i + 1));
  t.is(context.drops.size, 0);
});

test('a missing folder is a start-up error naming the path', (t) => {
  const path = join(tempDir(t), 'no-such-folder', 'events.json');
  const error = t.throws(() => new JsonFileSink({ path, context: recordingContext() }), { instanceOf: PacketPonyError });
  t.is((error as PacketPonyError).code, 'PP_ERR_LOG_SINK');
  t.true(error!.message.includes(path));
  t.regex(error!.message, /ENOENT: no such file or directory: its folder does not exist/);
});

test('a folder given as the file is a start-up error too', (t) => {
  const dir = tempDir(t);
  const error = t.throws(() => new JsonFileSink({ path: dir, context: recordingContext() }));
  t.regex(error!.message, /EISDIR/);
});

test('reopen after a rename: the old file keeps what was written, the new one gets the rest', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'events.json');
  const sink = new JsonFileSink({ path, context: recordingContext() });
  for (let i = 1; i <= 100; i++) sink.write(tcpClose({ source_port: i }));
  await waitFor(() => lines(path).length === 100, '100 lines in the first file');
  renameSync(path, `${path}.1`);
  for (let i = 101; i <= 150; i++) sink.write(tcpClose({ source_port: i })); // still to the renamed file, or the new one
  sink.reopen();
  for (let i = 151; i <= 300; i++) sink.write(tcpClose({ source_port: i }));
  await sink.close();
  const old = lines(`${path}.1`).map((l) => (JSON.parse(l) as { source_port: number }).source_port);
  const fresh = lines(path).map((l) => (JSON.parse(l) as { source_port: number }).source_port);
  t.deepEqual(old.slice(0, 100), Array.from({ length: 100 }, (_, i) => i + 1));
  t.true(fresh.length >= 150, `the new file has ${fresh.length} lines`);
  t.deepEqual([...old, ...fresh], Array.from({ length: 300 }, (_, i) => i + 1), 'every event once, in order');
});

test('reopen: events waiting when it is asked for go to the old file; the first line of the new one is the next event', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'events.json');
  const sink = new JsonFileSink({ path, context: recordingContext() });
  // Written in one turn: the first batch is in flight, the rest still queued, when the reopen comes.
  for (let i = 1; i <= 1200; i++) sink.write(tcpClose({ source_port: i }));
  renameSync(path, `${path}.1`);
  sink.reopen();
  sink.write(message('reopened'));
  sink.write(tcpClose({ source_port: 1201 }));
  await sink.close();
  const old = lines(`${path}.1`).map((l) => (JSON.parse(l) as { source_port: number }).source_port);
  const fresh = lines(path).map((l) => JSON.parse(l) as { message?: string; source_port?: number });
  t.deepEqual(old, Array.from({ length: 1200 }, (_, i) => i + 1));
  t.is(fresh.length, 2);
  t.is(fresh[0]!.message, 'reopened');
  t.is(fresh[1]!.source_port, 1201);
});

test('a reopen that fails keeps writing to the file already open, and says so', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'sub', 'events.json');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(join(dir, 'sub'));
  const context = recordingContext();
  const sink = new JsonFileSink({ path, context });
  renameSync(join(dir, 'sub'), join(dir, 'moved'));
  sink.reopen();
  sink.write(message('after the failed reopen'));
  await sink.close();
  t.is(lines(join(dir, 'moved', 'events.json')).length, 1);
  t.is(context.reports.length, 1);
  t.regex(context.reports[0]!.message, /cannot reopen .*ENOENT.*keep going to the file opened before/);
});

test('a full disk is reported once, drops are counted, and nothing throws', async (t) => {
  if (!existsSync('/dev/full')) return t.pass('no /dev/full here');
  const context = recordingContext();
  const sink = new JsonFileSink({ path: '/dev/full', context });
  for (let i = 0; i < 2000; i++) sink.write(tcpClose());
  await sink.close();
  t.is(context.drops.get('jsonlog'), 2000);
  t.is(context.reports.length, 1);
  t.regex(context.reports[0]!.message, /cannot write to \/dev\/full: ENOSPC/);
});

test('beyond its queue the sink drops and counts instead of growing', async (t) => {
  const path = join(tempDir(t), 'events.json');
  const context = recordingContext();
  const sink = new JsonFileSink({ path, context, capacity: 10 });
  // The first write starts at once (the queue empties into one batch); the next ones wait for it.
  for (let i = 0; i < 1000; i++) sink.write(tcpClose());
  await sink.close();
  const dropped = context.drops.get('jsonlog') ?? 0;
  t.true(dropped > 0);
  t.is(lines(path).length + dropped, 1000);
});

test('events after close are counted as dropped', async (t) => {
  const context = recordingContext();
  const sink = new JsonFileSink({ path: join(tempDir(t), 'e.json'), context });
  await sink.close();
  sink.write(message('too late'));
  t.is(context.drops.get('jsonlog'), 1);
});
