/**
 * The JSON Schemas in schema/ are the single source of truth for keys, types and defaults. This
 * module compiles them once with ajv and turns ajv's errors into messages a sysadmin can act on.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import { SCHEMA_DIR } from '../paths.js';
import { closest } from './suggest.js';
import { bufferSizeOutOfRange } from './types.js';
import { formatSize } from './units.js';
import type { FieldPath } from './yaml-source.js';

const LISTENER_ID = 'https://packetpony.invalid/schema/listener.schema.json';
const MAIN_ID = 'https://packetpony.invalid/schema/packetpony.schema.json';

/** A schema violation at a place in a document. */
export interface SchemaProblem {
  readonly path: FieldPath;
  /** Point at the key rather than the value (unknown keys). */
  readonly key: boolean;
  readonly message: string;
}

interface Validators {
  main: ValidateFunction;
  fields: ValidateFunction;
  fillMain: ValidateFunction;
  fillListener: ValidateFunction;
  listenerSchema: Record<string, unknown>;
}

let compiled: Validators | undefined;

function validators(): Validators {
  if (compiled) return compiled;
  const listenerSchema = JSON.parse(readFileSync(join(SCHEMA_DIR, 'listener.schema.json'), 'utf8')) as Record<string, unknown>;
  const mainSchema = JSON.parse(readFileSync(join(SCHEMA_DIR, 'packetpony.schema.json'), 'utf8')) as Record<string, unknown>;
  const options = { allErrors: true, strict: true, strictRequired: false, allowUnionTypes: true } as const;
  // One instance reports (verbose: errors carry the offending value and schema), the other fills
  // in defaults; a checking pass must not invent values that would then be located in the file.
  const checker = new Ajv2020({ ...options, verbose: true });
  const filler = new Ajv2020({ ...options, useDefaults: true });
  for (const ajv of [checker, filler]) {
    ajv.addSchema(listenerSchema);
    ajv.addSchema(mainSchema);
  }
  compiled = {
    main: checker.getSchema(MAIN_ID)!,
    fields: checker.getSchema(`${LISTENER_ID}#/$defs/fields`)!,
    fillMain: filler.getSchema(MAIN_ID)!,
    fillListener: filler.getSchema(LISTENER_ID)!,
    listenerSchema,
  };
  return compiled;
}

/** Checks the main file as written (no defaults applied). */
export function checkMain(data: unknown): SchemaProblem[] {
  const validate = validators().main;
  return validate(data) ? [] : translate(validate.errors ?? []);
}

/** Checks one listener (a conf.d file, an inline entry, or `defaults:`) as written; nothing is required. */
export function checkListenerFields(data: unknown): SchemaProblem[] {
  const validate = validators().fields;
  return validate(data) ? [] : translate(validate.errors ?? []);
}

/** Fills the main file's defaults in place (server, logging, metrics). */
export function fillMainDefaults(data: Record<string, unknown>): void {
  validators().fillMain(data);
}

/**
 * Fills a listener's defaults in place and reports what is still missing. Run on a listener merged
 * with `defaults:` after both passed `checkListenerFields`, so only required keys can fail here.
 */
export function fillListenerDefaults(data: Record<string, unknown>): SchemaProblem[] {
  const validate = validators().fillListener;
  return validate(data) ? [] : translate(validate.errors ?? []).filter((p) => p.message.startsWith('missing'));
}

/** The property names a listener may have, for suggestions in other places. */
export function listenerSections(): Record<string, string[]> {
  const fields = (validators().listenerSchema.$defs as Record<string, { properties: Record<string, { properties?: object }> }>).fields;
  const out: Record<string, string[]> = { '': Object.keys(fields.properties) };
  for (const [name, prop] of Object.entries(fields.properties)) {
    if (prop.properties) out[name] = Object.keys(prop.properties);
  }
  return out;
}

function pointerToPath(pointer: string): (string | number)[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((part) => (/^\d+$/.test(part) ? Number(part) : part));
}

function describe(value: unknown): string {
  if (value === null) return 'nothing (null)';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return JSON.stringify(value);
  return String(value);
}

const TYPE_WORDS: Readonly<Record<string, string>> = {
  object: 'a mapping (indented "key: value" lines)',
  array: 'a list (lines starting with "- ")',
  string: 'a string',
  integer: 'a whole number',
  number: 'a number',
  boolean: 'true or false',
};

const REQUIRED_HINTS: Readonly<Record<string, string>> = {
  protocol: ' (tcp or udp)',
  listen_address: ' (e.g. "0.0.0.0:8080")',
  target_address: ' (e.g. "192.0.2.10:80")',
  path: ' (the log file, e.g. "/var/log/packetpony/events.json")',
  address: ' (e.g. "localhost:514", or "/dev/log" with network: unix)',
  trusted: ' (the addresses of the fronts that send the header, e.g. ["10.0.0.0/8"])',
};

const DURATION_EXAMPLES = '"500ms", "30s", "1m30s", "1h"';
const SIZE_EXAMPLES = '"512KB", "10MB", "1.5GB" (1MB = 1,048,576 bytes)';

function translateOne(error: ErrorObject): SchemaProblem | undefined {
  const path = pointerToPath(error.instancePath);
  const value: unknown = error.data;
  const isDuration = error.schemaPath.includes('/$defs/duration/');
  const isSize = error.schemaPath.includes('/$defs/size/');
  const last = path[path.length - 1];
  switch (error.keyword) {
    case 'if':
      return undefined; // the failing `then` reports the actual problem
    case 'additionalProperties': {
      const key = String((error.params as { additionalProperty: string }).additionalProperty);
      const known = Object.keys((error.parentSchema as { properties?: object } | undefined)?.properties ?? {});
      return { path: [...path, key], key: true, message: unknownKeyMessage(key, known, path) };
    }
    case 'required': {
      const key = String((error.params as { missingProperty: string }).missingProperty);
      // `address` of a target is a target address, not the syslog one.
      const hint = path[path.length - 2] === 'targets' ? REQUIRED_HINTS.target_address : REQUIRED_HINTS[key];
      return { path, key: false, message: `missing required key "${key}"${hint ?? ''}` };
    }
    case 'enum': {
      const allowed = (error.params as { allowedValues: unknown[] }).allowedValues.map(String);
      return { path, key: false, message: `must be one of ${allowed.join(', ')} (got ${describe(value)})` };
    }
    case 'type':
      if (isDuration && typeof value === 'number') {
        return { path, key: false, message: `a duration needs a unit: write "${value}s" (or e.g. ${DURATION_EXAMPLES})` };
      }
      if (isDuration) return { path, key: false, message: `must be a duration such as ${DURATION_EXAMPLES} (got ${describe(value)})` };
      if (isSize) return { path, key: false, message: `must be a size such as ${SIZE_EXAMPLES} (got ${describe(value)})` };
      return { path, key: false, message: `must be ${typeWords((error.params as { type: string | string[] }).type)} (got ${describe(value)})` };
    case 'pattern':
      if (isDuration) {
        return { path, key: false, message: `${describe(value)} is not a duration: write numbers with units ns, us, ms, s, m, h, e.g. ${DURATION_EXAMPLES}` };
      }
      if (isSize || last === 'buffer_size') {
        return { path, key: false, message: `${describe(value)} is not a size: write a number and a unit B, KB, MB, GB or TB, e.g. ${SIZE_EXAMPLES}` };
      }
      if (last === 'name') {
        return { path, key: false, message: `${describe(value)} is not a valid name: use letters, digits, ".", "_" and "-", starting with a letter or digit, at most 64 characters` };
      }
      if (last === 'path') return { path, key: false, message: `must start with "/" (got ${describe(value)})` };
      if (last === 'tag') return { path, key: false, message: `must be 1 to 48 characters without spaces (got ${describe(value)})` };
      return { path, key: false, message: `${describe(value)} has the wrong form` };
    case 'minimum':
    case 'maximum':
      if (isSize) {
        const suggestion = typeof value === 'number' && value > 0 ? `"${formatSize(value)}"` : SIZE_EXAMPLES;
        return { path, key: false, message: `a size needs a unit: write ${suggestion}; only 0 (off) may be written without one (1MB = 1,048,576 bytes)` };
      }
      if (last === 'buffer_size') return { path, key: false, message: bufferSizeOutOfRange(describe(value)) };
      return {
        path,
        key: false,
        message: `must be at least ${(error.params as { limit: number }).limit} (got ${describe(value)}); remove the key to have no limit`,
      };
    case 'minLength':
      return { path, key: false, message: 'must not be empty' };
    case 'minItems':
      return { path, key: false, message: 'must not be an empty list' };
    default:
      return { path, key: false, message: error.message ?? 'is invalid' };
  }
}

function typeWords(type: string | string[]): string {
  return (Array.isArray(type) ? type : [type]).map((t) => TYPE_WORDS[t] ?? t).join(' or ');
}

function unknownKeyMessage(key: string, known: string[], parent: FieldPath): string {
  const guess = closest(key, known);
  if (guess) return `unknown key "${key}"; did you mean "${guess}"?`;
  // A key that is right but in the wrong section: `read_timeout` at the top of a listener.
  const sections = listenerSections();
  for (const [section, names] of Object.entries(sections)) {
    if (section !== '' && names.includes(key) && parent[parent.length - 1] !== section) {
      return `unknown key "${key}" here; it belongs under "${section}:"`;
    }
  }
  if (key === 'listeners' && parent.length === 0 && known.includes('protocol')) {
    return 'unknown key "listeners": a conf.d file holds exactly one listener, with its keys (name, protocol, listen_address, ...) at the top level';
  }
  return `unknown key "${key}" (known keys here: ${known.join(', ')})`;
}

function translate(errors: ErrorObject[]): SchemaProblem[] {
  const out: SchemaProblem[] = [];
  const seen = new Set<string>();
  for (const error of errors) {
    const problem = translateOne(error);
    if (!problem) continue;
    const id = `${problem.path.join('/')}|${problem.message}`;
    if (seen.has(id)) continue;
    seen.add(id);
    out.push(problem);
  }
  return out;
}
