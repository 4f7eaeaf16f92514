import test from 'ava';
import { Writable } from 'node:stream';
import { StdoutSink } from '../../../src/telemetry/sinks/stdout.js';
import { message, recordingContext, tcpClose } from './fixtures.js';

/** A stream whose reader takes nothing until `release()`. */
function stalledStream(): { stream: Writable; chunks: string[]; release(): void } {
  const chunks: string[] = [];
  const held: Array<() => void> = [];
  let released = false;
  const stream = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk.toString());
      if (released) callback();
      else held.push(callback);
    },
  });
  return { stream, chunks, release: () => { released = true; for (const cb of held.splice(0)) cb(); } };
}

const tick = (): Promise<void> => new Promise((resolve) => process.nextTick(resolve));

test('text and JSON lines', async (t) => {
  const out: string[] = [];
  const stream = new Writable({ write: (chunk: Buffer, _e, cb) => { out.push(chunk.toString()); cb(); } });
  new StdoutSink({ json: false, stream }).write(tcpClose());
  new StdoutSink({ json: true, stream }).write(tcpClose());
  await tick();
  t.regex(out[0]!, /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] Connection closed: listener=web .*bytes_recv=4096\n$/);
  t.is((JSON.parse(out[1]!) as { event_type: string }).event_type, 'close');
});

test('a reader that stops: output beyond the bound is dropped and counted, said once, and the recovery too', async (t) => {
  const { stream, release } = stalledStream();
  const context = recordingContext();
  const sink = new StdoutSink({ json: false, stream, context, bufferLimit: 2000 });
  for (let i = 0; i < 100; i++) sink.write(tcpClose());
  const dropped = context.drops.get('stdout') ?? 0;
  t.true(dropped > 50, `dropped ${dropped}`);
  t.true(stream.writableLength < 2000 + 500, 'the stream buffer stays near the bound');
  t.is(context.reports.length, 1);
  t.regex(context.reports[0]!.message, /not being read fast enough/);
  release();
  await new Promise((resolve) => setImmediate(resolve));
  sink.write(message('back'));
  t.is(context.reports.length, 2);
  t.regex(context.reports[1]!.message, new RegExp(`caught up; ${dropped} events were dropped`));
});

test('an error on the stream (EPIPE) is reported once and never thrown', (t) => {
  const stream = new Writable({ write: (_c, _e, cb) => cb(new Error('EPIPE')) });
  const context = recordingContext();
  const sink = new StdoutSink({ json: false, stream, context });
  sink.write(message('a'));
  return new Promise<void>((resolve) => setImmediate(() => {
    sink.write(message('b'));
    t.is(context.reports.length, 1);
    t.regex(context.reports[0]!.message, /cannot write to standard output \(EPIPE\)/);
    t.is(context.drops.get('stdout'), 1);
    resolve();
  }));
});

test('close waits for the reader, bounded by the deadline', async (t) => {
  const { stream, chunks, release } = stalledStream();
  const sink = new StdoutSink({ json: false, stream });
  sink.write(message('x'));
  const started = Date.now();
  await sink.close(50);
  t.true(Date.now() - started < 1000);
  setImmediate(release);
  const sink2 = new StdoutSink({ json: false, stream });
  await sink2.close(5000);
  t.true(chunks.length >= 1);
});

test('lines written in the same tick leave in one write, in order; the next tick starts a new batch', async (t) => {
  const calls: string[] = [];
  const stream = new Writable({
    writev: (chunks, cb) => { calls.push(...chunks.map((c) => String(c.chunk))); cb(); },
  });
  const sink = new StdoutSink({ json: false, stream });
  for (let i = 0; i < 50; i++) sink.write(message(`line ${i}`));
  t.is(calls.length, 0, 'nothing leaves before the tick ends');
  await tick();
  t.is(calls.length, 1, 'one chunk for the whole batch');
  const lines = calls[0]!.split('\n');
  t.is(lines.pop(), '', 'every line ends with a newline');
  t.is(lines.length, 50);
  t.true(lines.every((line, i) => line.includes(`line ${i}`)));
  sink.write(message('later'));
  await tick();
  t.is(calls.length, 2);
  t.regex(calls[1]!, /later/);
});
