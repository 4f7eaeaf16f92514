/** The supervisor's side of one listener, with fixture children standing in for the real one. */
import test from 'ava';
import { join } from 'node:path';
import type { ListenerConfig } from '../../src/config/types.js';
import { ListenerChild } from '../../src/supervisor/listener-child.js';
import type { LogEvent } from '../../src/telemetry/events.js';
import { Logger, type LogSink } from '../../src/telemetry/logger.js';
import { FIXTURES } from '../helpers/paths.js';
import { waitFor } from '../helpers/wait-for.js';

function memoryLogger(): { logger: Logger; messages: string[] } {
  const messages: string[] = [];
  const sink: LogSink = {
    name: 'memory',
    threshold: 'debug',
    write: (event: LogEvent) => {
      if (event.kind === 'message') messages.push(event.message);
    },
    close: () => Promise.resolve(),
  };
  return { logger: new Logger([sink]), messages };
}

const config = {
  name: 'crashy',
  protocol: 'tcp',
  listen: { host: '127.0.0.1', port: 0 },
  listen_address: '127.0.0.1:0',
  ipv6_only: false,
  targets: [{ address: '127.0.0.1:9', endpoint: { host: '127.0.0.1', port: 9 }, backup: false }],
  health_check: null,
} as unknown as ListenerConfig;

test('a crashing child: exit code and its last stderr lines are logged, restarts back off', async (t) => {
  const { logger, messages } = memoryLogger();
  const gone: number[] = [];
  const child = new ListenerChild(config, logger, { report: () => {}, childGone: (_, pid) => gone.push(pid) }, {
    childEntry: join(FIXTURES, 'children/crash-with-stderr.cjs'),
  });
  t.teardown(() => child.kill());
  child.start();
  await waitFor(() => messages.filter((m) => m.includes('exited with code 3')).length >= 3 || undefined, 'three crashes', 20_000);
  const crashes = messages.filter((m) => m.includes('exited with code 3'));
  t.regex(crashes[0]!, /listener crashy: child exited with code 3; restarting in 100 ms; last stderr lines: first line of the crash report \| Error: the proxy core blew up \| +at somewhere/);
  t.regex(crashes[1]!, /restarting in 200 ms/);
  t.regex(crashes[2]!, /restarting in 400 ms/);
  t.true(child.restarts >= 3);
  t.true(gone.length >= 3, 'each dead child is reported gone');
  t.is(child.state === 'backoff' || child.state === 'starting', true);
});
