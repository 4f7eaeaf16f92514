/** The syslog sink's queue, retry and flush behaviour, with a transport the test controls. */
import test from 'ava';
import { RetryDelay } from '../../../src/telemetry/sinks/retry-delay.js';
import { SyslogSink, type SyslogItem, type SyslogTransport } from '../../../src/telemetry/sinks/syslog-sink.js';
import { waitFor } from '../../helpers/wait-for.js';
import { message, recordingContext } from './fixtures.js';

/** A destination that can be up, down (connect throws), or silent (accepts and never confirms). */
class FakeDestination {
  mode: 'up' | 'down' | 'silent' | 'fail-send' = 'up';
  received: string[] = [];
  connects = 0;
  closes = 0;
  broken: ((error: Error) => void) | undefined;

  connect = (broken: (error: Error) => void): SyslogTransport => {
    this.connects++;
    if (this.mode === 'down') throw new Error('ECONNREFUSED');
    this.broken = broken;
    return {
      send: (item: SyslogItem, done: (error: Error | null) => void) => {
        if (this.mode === 'silent') return;
        if (this.mode === 'fail-send') return done(new Error('EPIPE'));
        if (item.event.kind === 'message') this.received.push(item.event.message);
        setImmediate(() => done(null));
      },
      close: () => this.closes++,
    };
  };
}

function sink(destination: FakeDestination, options: { capacity?: number; stallMs?: number } = {}) {
  const context = recordingContext();
  const s = new SyslogSink({
    connect: destination.connect,
    destination: 'fake',
    threshold: 'info',
    context,
    retry: new RetryDelay(5, 20),
    ...options,
  });
  return { sink: s, context };
}

test('delivers in order over one connection', async (t) => {
  const destination = new FakeDestination();
  const { sink: s, context } = sink(destination);
  for (let i = 0; i < 200; i++) s.write(message(`m${i}`), 'info');
  await waitFor(() => destination.received.length === 200, '200 messages');
  t.deepEqual(destination.received, Array.from({ length: 200 }, (_, i) => `m${i}`));
  t.is(destination.connects, 1);
  await s.close();
  t.is(context.drops.size, 0);
});

test('a destination that is down: events wait up to the bound, the rest are dropped and counted; all waiting ones arrive once it is back', async (t) => {
  const destination = new FakeDestination();
  destination.mode = 'down';
  const { sink: s, context } = sink(destination, { capacity: 50 });
  for (let i = 0; i < 80; i++) s.write(message(`m${i}`), 'info');
  await waitFor(() => destination.connects >= 3, 'a few reconnection attempts');
  t.is(context.drops.get('syslog'), 30);
  t.is(context.reports.filter((r) => r.level === 'error').length, 1, 'the failure is said once, not at every retry');
  t.regex(context.reports[0]!.message, /cannot send to fake: ECONNREFUSED/);
  destination.mode = 'up';
  await waitFor(() => destination.received.length === 50, 'the 50 queued messages');
  t.deepEqual(destination.received, Array.from({ length: 50 }, (_, i) => `m${i}`));
  await waitFor(() => context.reports.some((r) => r.level === 'notice'), 'the recovery report');
  t.regex(context.reports.at(-1)!.message, /takes events again; 30 were dropped/);
  await s.close();
});

test('a failed send puts the message back and tries a new connection', async (t) => {
  const destination = new FakeDestination();
  destination.mode = 'fail-send';
  const { sink: s } = sink(destination);
  s.write(message('kept'), 'info');
  await waitFor(() => destination.connects >= 2, 'a second connection');
  t.true(destination.closes >= 1, 'the broken transport was closed');
  destination.mode = 'up';
  await waitFor(() => destination.received.length === 1, 'the message');
  t.deepEqual(destination.received, ['kept']);
  await s.close();
});

test('a transport that breaks between sends is replaced', async (t) => {
  const destination = new FakeDestination();
  const { sink: s } = sink(destination);
  s.write(message('one'), 'info');
  await waitFor(() => destination.received.length === 1, 'the first message');
  destination.broken!(new Error('the server closed the connection'));
  s.write(message('two'), 'info');
  await waitFor(() => destination.received.length === 2, 'the second message');
  t.is(destination.connects, 2);
  await s.close();
});

test('a destination that accepts and never confirms is given up after the stall time', async (t) => {
  const destination = new FakeDestination();
  destination.mode = 'silent';
  const { sink: s, context } = sink(destination, { stallMs: 50 });
  s.write(message('stuck'), 'info');
  await waitFor(() => context.reports.length === 1, 'the stall report');
  t.regex(context.reports[0]!.message, /no message confirmed/);
  destination.mode = 'up';
  await waitFor(() => destination.received.length === 1, 'the message, resent');
  await s.close();
});

test('close sends what is queued when it can, and counts the rest when the deadline passes', async (t) => {
  const up = new FakeDestination();
  const a = sink(up);
  for (let i = 0; i < 100; i++) a.sink.write(message(`m${i}`), 'info');
  await a.sink.close(2000);
  t.is(up.received.length, 100);
  t.is(a.context.drops.size, 0);

  const down = new FakeDestination();
  down.mode = 'down';
  const b = sink(down);
  for (let i = 0; i < 100; i++) b.sink.write(message(`m${i}`), 'info');
  const started = Date.now();
  await b.sink.close(100);
  t.true(Date.now() - started < 2000, 'the deadline bounds the wait');
  t.is(b.context.drops.get('syslog'), 100);
  b.sink.write(message('after close'), 'info');
  t.is(b.context.drops.get('syslog'), 101);
});
