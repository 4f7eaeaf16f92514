/** The schemas are the single source of truth: they must document themselves and hold together. */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/paths.js';

type Schema = { properties?: Record<string, Schema>; description?: string; $defs?: Record<string, Schema>; default?: unknown };

function load(name: string): Schema {
  return JSON.parse(readFileSync(join(REPO_ROOT, 'schema', name), 'utf8')) as Schema;
}

function undocumented(schema: Schema, path: string, out: string[]): string[] {
  for (const [key, prop] of Object.entries(schema.properties ?? {})) {
    if (typeof prop.description !== 'string' || prop.description.length < 10) out.push(`${path}${key}`);
    undocumented(prop, `${path}${key}.`, out);
  }
  return out;
}

test('every property of both schemas has a description, for editors', (t) => {
  const listener = load('listener.schema.json');
  t.deepEqual(undocumented(listener.$defs!.fields!, '', []), []);
  t.deepEqual(undocumented(load('packetpony.schema.json'), '', []), []);
});

test('the listener schema gives SPEC.md defaults', (t) => {
  const fields = load('listener.schema.json').$defs!.fields!.properties!;
  const udp = fields.udp!.properties!;
  t.is(udp.session_timeout!.default, '30s');
  t.is(udp.buffer_size!.default, 4096);
  const logging = udp.logging!.properties!;
  t.deepEqual(
    Object.fromEntries(Object.entries(logging).map(([k, v]) => [k, v.default])),
    { log_session_start: true, log_session_close: true, periodic_log_interval: '5m', periodic_log_bytes: '100MB', min_log_duration: '0s', min_log_bytes: 0 },
  );
  t.is(fields.rate_limits!.properties!.action!.default, 'drop');
  t.is(fields.tcp!.properties!.connect_timeout!.default, '10s');
  t.is(load('packetpony.schema.json').properties!.server!.properties!.shutdown_timeout!.default, '30s');
});
