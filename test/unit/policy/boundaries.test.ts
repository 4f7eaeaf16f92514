import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import test from 'ava';

// Compiled to dist/test/unit/policy/: the sources are four levels up.
const SOURCE = fileURLToPath(new URL('../../../../src/policy/', import.meta.url));
const files = readdirSync(SOURCE).filter((name) => name.endsWith('.ts'));

const ALLOWED_OUTSIDE = new Set(['ipaddr.js', '../config/types.js', '../telemetry/events.js']);

test('policy sources exist', (t) => {
  t.true(files.includes('rate-limiter.ts') && files.includes('allowlist.ts'));
});

for (const file of files) {
  test(`${file} imports only policy/, config types, telemetry event types and ipaddr.js`, (t) => {
    const text = readFileSync(`${SOURCE}${file}`, 'utf8');
    for (const match of text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+['"]([^'"]+)['"]/gm)) {
      const target = match[1]!;
      t.true(target.startsWith('./') || ALLOWED_OUTSIDE.has(target), `${file} imports ${target}`);
      if (target.startsWith('../')) t.regex(match[0], /import type|export type/, `${file} may take only types from ${target}`);
    }
    t.pass();
  });

  test(`${file} keeps no timers and reads no clock of its own`, (t) => {
    const code = readFileSync(`${SOURCE}${file}`, 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
    t.notRegex(code, /\b(setTimeout|setInterval|setImmediate|Date\.now|new Date|performance\.now|process\.hrtime)\b/);
  });
}
