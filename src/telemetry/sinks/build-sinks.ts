/**
 * The sinks a `logging:` section asks for. With none enabled, stdout text lines are used (the
 * original refused to start without a sink; a daemon that says nothing helps nobody).
 *
 * Each sink has a key made of its settings. On a reload, a sink whose key did not change is kept as
 * it is — the JSON file stays open, the syslog connection stays up, nothing queued is lost — and
 * only the others are created or closed.
 */
import type { LoggingSettings } from '../../config/types.js';
import type { LogSink, SinkContext } from '../logger.js';
import { JsonFileSink } from './json-file.js';
import { StdoutSink } from './stdout.js';
import { networkSyslog } from './syslog-network.js';
import { SyslogSink } from './syslog-sink.js';
import { unixSyslog } from './syslog-unix.js';

export type KeyedSinks = ReadonlyMap<string, LogSink>;

interface Wanted {
  readonly key: string;
  create(): LogSink;
}

function wanted(logging: LoggingSettings, context: SinkContext): Wanted[] {
  const out: Wanted[] = [];
  const { stdout, jsonlog, syslog } = logging;
  if (jsonlog.enabled) {
    out.push({ key: `jsonlog ${jsonlog.path}`, create: () => new JsonFileSink({ path: jsonlog.path, context }) });
  }
  if (syslog.enabled) {
    out.push({
      key: `syslog ${syslog.network} ${syslog.address} ${syslog.tag} ${syslog.priority}`,
      create: () => {
        const connect = syslog.network === 'unix'
          ? unixSyslog({ path: syslog.address, tag: syslog.tag })
          : networkSyslog({ protocol: syslog.network, address: syslog.address, tag: syslog.tag });
        return new SyslogSink({ connect, destination: `${syslog.network} ${syslog.address}`, threshold: syslog.priority, context });
      },
    });
  }
  if (stdout.enabled || out.length === 0) {
    const json = stdout.enabled && stdout.use_json;
    out.push({ key: `stdout ${json ? 'json' : 'text'}`, create: () => new StdoutSink({ json, context }) });
  }
  return out;
}

/**
 * The sinks for `logging`, reusing those of `current` whose settings are unchanged. Throws
 * LogSinkError (having closed whatever it created) when a sink cannot be set up; `current` is
 * untouched either way — closing the sinks no longer wanted is the caller's business.
 */
export function buildSinks(logging: LoggingSettings, context: SinkContext, current: KeyedSinks = new Map()): Map<string, LogSink> {
  const next = new Map<string, LogSink>();
  const created: LogSink[] = [];
  try {
    for (const want of wanted(logging, context)) {
      let sink = current.get(want.key);
      if (!sink) {
        sink = want.create();
        created.push(sink);
      }
      next.set(want.key, sink);
    }
  } catch (error) {
    for (const sink of created) void sink.close(0);
    throw error;
  }
  return next;
}
