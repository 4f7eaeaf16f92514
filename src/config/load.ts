/**
 * The whole configuration pipeline: main file, drop-in files, defaults, schema, semantic rules and
 * the checks across listeners. Collects every problem instead of stopping at the first.
 */
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ConfigInvalidError, ConfigUnreadableError, type ConfigIssue } from '../errors.js';
import { formatEndpoint } from './address.js';
import { listDropIns, stemOf } from './conf-dir.js';
import { buildListener, foldEnumCase, isMap, type DefaultsSource, type ListenerSource } from './listener.js';
import { readMainFile } from './main-file.js';
import { checkListenerFields } from './schema.js';
import type { DaemonConfig, ListenerConfig, MainSettings } from './types.js';
import { displayPath, formatFieldPath, YamlSource } from './yaml-source.js';

const ETC_DIR = '/etc/packetpony';

/**
 * The main file used without --config: packetpony.yaml, or the original's config.yaml when only
 * that exists, so a host upgraded from the original keeps working.
 */
export function defaultConfigFile(etcDir = ETC_DIR): string {
  const ours = join(etcDir, 'packetpony.yaml');
  const original = join(etcDir, 'config.yaml');
  return !existsSync(ours) && existsSync(original) ? original : ours;
}

export interface LoadOptions {
  readonly configFile: string;
  /** --conf-dir, which wins over the main file's conf_dir. */
  readonly confDir?: string;
}

/** A listener together with where it was written, for messages about it. */
interface Built {
  readonly listener: ListenerConfig;
  readonly source: ListenerSource;
}

/** A listener as read, valid or not: names are checked for uniqueness even among broken ones. */
interface Candidate {
  readonly source: ListenerSource;
  readonly listener: ListenerConfig | undefined;
}

/** What one file contributed: used by live reload to keep a bad file's last good version. */
export interface FileOutcome {
  readonly path: string;
  readonly ok: boolean;
  readonly listeners: readonly ListenerConfig[];
}

export interface ConfigReport {
  /** Set when the main file's own settings are valid. */
  readonly main: MainSettings | undefined;
  /** Every listener that is valid, in order: main file first, then conf.d by name. */
  readonly listeners: readonly ListenerConfig[];
  /** One entry per source file (the main file first), whether all it holds is valid. */
  readonly files: readonly FileOutcome[];
  readonly issues: readonly ConfigIssue[];
  readonly errorCount: number;
}

/** Reads and checks everything; never throws for problems in the files' content. */
export function readConfig(options: LoadOptions): ConfigReport {
  const issues: ConfigIssue[] = [];
  const doc = YamlSource.read(options.configFile); // an unreadable main file is fatal: throws
  issues.push(...doc.issues);
  if (doc.issues.length > 0) return report(undefined, [], [{ path: doc.absolutePath, ok: false, listeners: [] }], issues);

  const main = readMainFile(doc, options.confDir, issues);
  const defaults = main.defaultsFailed ? undefined : main.defaults;
  const failedFiles = new Set<string>();
  if (main.settings === undefined || main.defaultsFailed) failedFiles.add(doc.absolutePath);

  const candidates: Candidate[] = [];
  main.inline.forEach((source, i) => {
    candidates.push({ source, listener: main.defaultsFailed ? undefined : buildListener(source, defaults, issues, main.inlineProblems.get(i)) });
  });

  const confDir = main.confDir;
  const dropInFiles: string[] = [];
  if (confDir !== undefined) {
    const listing = listDropIns(confDir);
    if (listing.kind === 'ok') dropInFiles.push(...listing.files);
    else if (listing.kind === 'unreadable' || main.inline.length === 0) {
      const where = doc.has(['conf_dir']) ? doc.issue(['conf_dir'], '') : doc.issue([], '');
      issues.push({
        ...where,
        field: options.confDir !== undefined ? '--conf-dir' : where.field,
        message: listing.kind === 'unreadable'
          ? `cannot read the drop-in folder ${displayPath(confDir)}: ${listing.reason}`
          : `the drop-in folder ${displayPath(confDir)} does not exist and no listener is configured: create it with one file per listener, or set conf_dir`,
      });
      failedFiles.add(doc.absolutePath);
    }
  }
  for (const path of dropInFiles) {
    const candidate = readDropIn(path, defaults, main.defaultsFailed, issues);
    if (candidate) candidates.push(candidate);
    else failedFiles.add(path);
  }

  const duplicates = checkNames(candidates, issues);
  const built: Built[] = [];
  for (const candidate of candidates) {
    if (candidate.listener && !duplicates.has(candidate)) built.push({ listener: candidate.listener, source: candidate.source });
    else failedFiles.add(candidate.source.doc.absolutePath);
  }
  const rejected = checkAcrossListeners(built, main.settings, issues);
  for (const entry of rejected) failedFiles.add(entry.source.doc.absolutePath);
  const good = built.filter((entry) => !rejected.has(entry));
  const listeners = good.map((entry) => deepFreeze(entry.listener));

  if (confDir !== undefined && candidates.length === 0 && failedFiles.size === 0) {
    issues.push({ ...doc.issue([], ''), message: `no listener is configured: add a file to ${displayPath(confDir)}`, severity: 'warning' });
  }

  const files: FileOutcome[] = [doc.absolutePath, ...dropInFiles].map((path) => ({
    path,
    ok: !failedFiles.has(path),
    listeners: listeners.filter((l) => l.source_file === path),
  }));
  return report(main.settings ? deepFreeze(main.settings) : undefined, listeners, files, issues);
}

function report(main: MainSettings | undefined, listeners: ListenerConfig[], files: FileOutcome[], issues: ConfigIssue[]): ConfigReport {
  // Files in the order they were read, then by position, so the output reads like the files do.
  const fileOrder = new Map<string, number>();
  for (const issue of issues) if (!fileOrder.has(issue.file)) fileOrder.set(issue.file, fileOrder.size);
  issues.sort((a, b) => fileOrder.get(a.file)! - fileOrder.get(b.file)! || a.line - b.line || a.col - b.col);
  return { main, listeners, files, issues, errorCount: issues.filter((i) => i.severity === 'error').length };
}

function readDropIn(path: string, defaults: DefaultsSource | undefined, defaultsFailed: boolean, issues: ConfigIssue[]): Candidate | undefined {
  let doc: YamlSource;
  try {
    doc = YamlSource.read(path);
  } catch (error) {
    const message = error instanceof ConfigUnreadableError ? error.message.replace(/^[^:]*: /, '') : String(error);
    issues.push({ file: displayPath(path), line: 1, col: 1, field: '', message, severity: 'error' });
    return undefined;
  }
  issues.push(...doc.issues);
  if (doc.issues.length > 0) return undefined;
  if (!isMap(doc.data)) {
    const what = doc.data === null || doc.data === undefined ? 'is empty' : 'is not a YAML mapping';
    issues.push(doc.issue([], `the file ${what}; a conf.d file holds one listener: protocol, listen_address, target_address, ...`));
    return undefined;
  }
  foldEnumCase(doc.data);
  const problems = checkListenerFields(doc.data);
  if (doc.data.listeners !== undefined) {
    // The original's single-file layout pasted into conf.d: one message says it all.
    const layout = problems.find((p) => p.path.length === 1 && p.path[0] === 'listeners')!;
    issues.push(doc.issue(layout.path, layout.message, { key: true }));
    return { source: { doc, base: [], raw: doc.data, defaultName: stemOf(basename(path)) }, listener: undefined };
  }
  for (const problem of problems) issues.push(doc.issue(problem.path, problem.message, { key: problem.key }));
  const source: ListenerSource = { doc, base: [], raw: doc.data, defaultName: stemOf(basename(path)) };
  if (defaultsFailed) return { source, listener: undefined };
  return { source, listener: buildListener(source, defaults, issues, problems.map((p) => p.path)) };
}

function isWildcard(host: string): boolean {
  return host === '' || host === '0.0.0.0' || host === '::';
}

/** Whether two listeners' sockets could not both be bound (same protocol and port, overlapping hosts). */
export function listenersClash(a: ListenerConfig, b: ListenerConfig): boolean {
  return a.protocol === b.protocol && a.listen.port !== 0 && a.listen.port === b.listen.port && addressesClash(a, b);
}

/** Whether two sockets of the same protocol and port could not both be bound. */
function addressesClash(a: ListenerConfig, b: ListenerConfig): boolean {
  const ha = a.listen.host;
  const hb = b.listen.host;
  if (ha === hb) return true;
  const dualStack = (l: ListenerConfig): boolean => l.listen.host === '' || (l.listen.host === '::' && !l.ipv6_only);
  if (dualStack(a) || dualStack(b)) return true;
  const family = (host: string): 4 | 6 => (host.includes(':') ? 6 : 4);
  if (isWildcard(ha) && family(ha) === family(hb)) return true;
  if (isWildcard(hb) && family(hb) === family(ha)) return true;
  return false;
}

/**
 * Unique names, no two listeners of one protocol on clashing addresses, the metrics server apart
 * from the TCP listeners. Returns the entries that lose (the later of each pair).
 */
function checkAcrossListeners(built: Built[], main: MainSettings | undefined, issues: ConfigIssue[]): Set<Built> {
  const rejected = new Set<Built>();
  const where = (entry: Built, key: string): ConfigIssue => {
    const path = entry.source.doc.has([...entry.source.base, key]) ? [...entry.source.base, key] : [...entry.source.base];
    return entry.source.doc.issue(path, '');
  };
  const position = (entry: Built, key: string): string => {
    const at = where(entry, key);
    return `${at.file}:${at.line}:${at.col}`;
  };

  // SPEC's dual-stack example pairs 0.0.0.0:P with [::]:P; the IPv6 one is then bound IPv6-only.
  for (const entry of built) {
    const l = entry.listener;
    if (l.listen.host !== '::') continue;
    const ipv4Twin = built.some((o) => o !== entry && o.listener.protocol === l.protocol && o.listener.listen.port === l.listen.port && o.listener.listen.host === '0.0.0.0');
    if (ipv4Twin) (l as { ipv6_only: boolean }).ipv6_only = true;
  }

  const kept: Built[] = [];
  for (const entry of built) {
    if (rejected.has(entry)) continue;
    const l = entry.listener;
    const clash = l.listen.port === 0 ? undefined : kept.find((o) => o.listener.protocol === l.protocol && o.listener.listen.port === l.listen.port && addressesClash(o.listener, l));
    if (clash) {
      issues.push({
        ...where(entry, 'listen_address'),
        message: `${formatEndpoint(l.listen.host || '*', l.listen.port)}/${l.protocol} clashes with listener "${clash.listener.name}" on ${formatEndpoint(clash.listener.listen.host || '*', clash.listener.listen.port)} (${position(clash, 'listen_address')}); use another port or address`,
      });
      rejected.add(entry);
    } else kept.push(entry);
  }

  // A shared listener counts with the fleet through the main file's store, which must be there.
  for (const entry of kept) {
    const l = entry.listener;
    if (!l.shared || rejected.has(entry)) continue;
    if (main?.shared_limits) {
      (l as { shared_limits: ListenerConfig['shared_limits'] }).shared_limits = main.shared_limits;
    } else if (main !== undefined) {
      const path = [...entry.source.base, 'rate_limits', 'shared'];
      const inDefaults = !entry.source.doc.has(path);
      issues.push({
        ...(inDefaults ? where(entry, 'rate_limits') : entry.source.doc.issue(path, '')),
        field: 'rate_limits.shared',
        message: `${inDefaults ? '(from defaults:) ' : ''}needs a "shared_limits:" section in the main file naming the store, e.g. shared_limits: { store: "redis://10.0.0.5:6379/0" }`,
      });
      rejected.add(entry);
    }
  }

  const metrics = main?.metrics.prometheus;
  if (metrics?.enabled && metrics.listen.port !== 0) {
    const fake = { listen: metrics.listen, ipv6_only: false } as ListenerConfig;
    for (const entry of kept) {
      if (entry.listener.protocol === 'tcp' && entry.listener.listen.port === metrics.listen.port && addressesClash(fake, entry.listener)) {
        issues.push({ ...where(entry, 'listen_address'), message: `clashes with the metrics server on ${metrics.listen_address}; use another port` });
        rejected.add(entry);
      }
    }
  }
  return rejected;
}

function nameOf(candidate: Candidate): string | undefined {
  if (candidate.listener) return candidate.listener.name;
  const name = candidate.source.raw.name ?? candidate.source.defaultName;
  return typeof name === 'string' ? name : undefined;
}

/** Listener names are unique across all files; the later of two is the one reported. */
function checkNames(candidates: readonly Candidate[], issues: ConfigIssue[]): Set<Candidate> {
  const duplicates = new Set<Candidate>();
  const byName = new Map<string, Candidate>();
  const where = (c: Candidate): ConfigIssue => {
    const path = c.source.raw.name !== undefined ? [...c.source.base, 'name'] : [...c.source.base];
    return c.source.doc.issue(path, '', { field: formatFieldPath(path) });
  };
  for (const candidate of candidates) {
    const name = nameOf(candidate);
    if (name === undefined) continue;
    const first = byName.get(name);
    if (!first) {
      byName.set(name, candidate);
      continue;
    }
    const at = where(first);
    const field = where(candidate);
    issues.push({
      ...field,
      field: field.field || 'name',
      message: `listener name "${name}" is already used at ${at.file}:${at.line}:${at.col}; names must be unique (a conf.d file is named after its file unless it sets "name:")`,
    });
    duplicates.add(candidate);
  }
  return duplicates;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** The configuration, or ConfigInvalidError with every error; warnings are returned alongside. */
export function loadConfig(options: LoadOptions): { config: DaemonConfig; warnings: ConfigIssue[] } {
  const result = readConfig(options);
  if (result.errorCount > 0 || result.main === undefined) throw new ConfigInvalidError(result.issues);
  return {
    config: { ...result.main, listeners: result.listeners },
    warnings: result.issues.filter((i) => i.severity === 'warning'),
  };
}
