import test from 'ava';
import type { LogEvent } from '../../../src/telemetry/events.js';
import { Logger, type LogSink, type Severity } from '../../../src/telemetry/logger.js';
import { deny, message, tcpClose } from './fixtures.js';

function recordingSink(name: string, threshold: Severity): LogSink & { got: LogEvent[]; closed: number } {
  const got: LogEvent[] = [];
  return {
    name,
    threshold,
    got,
    closed: 0,
    write(event) {
      got.push(event);
    },
    close() {
      this.closed++;
      return Promise.resolve();
    },
  };
}

test('each sink gets what its threshold admits: syslog priority "warning" takes denials and errors, not connections', (t) => {
  const all = recordingSink('stdout', 'info');
  const warnings = recordingSink('syslog', 'warning');
  const logger = new Logger([all, warnings]);
  logger.log(tcpClose());
  logger.log(tcpClose({ event_type: 'error', error: 'ECONNREFUSED' }));
  logger.log(deny());
  logger.info('listener up');
  logger.notice('reloaded');
  logger.warn('careful');
  t.is(all.got.length, 6);
  t.deepEqual(warnings.got.map((e) => (e.kind === 'message' ? e.message : e.kind === 'connection' ? e.event_type : 'deny')), ['error', 'deny', 'careful']);
});

test("a sink's problem goes to stderr and to the other sinks, never back to it", (t) => {
  const failing = recordingSink('syslog', 'debug');
  const other = recordingSink('stdout', 'info');
  const logger = new Logger([failing, other]);
  const written: string[] = [];
  const original = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string) => written.push(chunk) > 0) as typeof process.stderr.write;
  try {
    logger.fromSink('syslog', 'error', 'cannot send to udp x:514');
  } finally {
    process.stderr.write = original;
  }
  t.deepEqual(written, ['packetpony: log sink syslog: cannot send to udp x:514\n']);
  t.is(failing.got.length, 0);
  t.is(other.got.length, 1);
  t.like(other.got[0], { kind: 'message', level: 'error', message: 'log sink syslog: cannot send to udp x:514' });
});

test('replaceSinks closes only the sinks that are not kept', async (t) => {
  const kept = recordingSink('stdout', 'info');
  const dropped = recordingSink('jsonlog', 'info');
  const added = recordingSink('syslog', 'info');
  const logger = new Logger([kept, dropped]);
  await logger.replaceSinks([kept, added]);
  t.is(kept.closed, 0);
  t.is(dropped.closed, 1);
  logger.log(message('after'));
  t.is(added.got.length, 1);
  t.is(dropped.got.length, 0);
});
