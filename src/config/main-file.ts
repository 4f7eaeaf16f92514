/**
 * The main file: server, logging and metrics settings, where the drop-in folder is, the listener
 * `defaults:` and any listeners written inline (the original's single-file layout).
 */
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import type { ConfigIssue } from '../errors.js';
import { parseListenAddress } from './address.js';
import { foldEnumCase, isMap, type DefaultsSource, type ListenerSource, type RawMap } from './listener.js';
import { checkMain, fillMainDefaults } from './schema.js';
import type { MainSettings, SyslogPriority } from './types.js';
import { parseDuration } from './units.js';
import type { FieldPath, YamlSource } from './yaml-source.js';

export interface MainFile {
  /** Undefined when the server, logging or metrics sections have errors. */
  readonly settings: MainSettings | undefined;
  readonly defaults: DefaultsSource | undefined;
  /** Whether `defaults:` has errors (then no listener can be built). */
  readonly defaultsFailed: boolean;
  readonly inline: readonly ListenerSource[];
  /** Inline entries that failed the schema check, by index. */
  readonly failedInline: ReadonlySet<number>;
  /** Absolute path of the drop-in folder (known even when other settings have errors). */
  readonly confDir: string | undefined;
  /** Schema problems in inline entries, by index, so they are not reported twice. */
  readonly inlineProblems: ReadonlyMap<number, FieldPath[]>;
}

const PRIORITY_ALIASES: Readonly<Record<string, SyslogPriority>> = { error: 'err', warn: 'warning' };
const HEALTH_PATHS = ['/health', '/healthz', '/ready'];

export function readMainFile(doc: YamlSource, confDirOverride: string | undefined, out: ConfigIssue[]): MainFile {
  const data: unknown = doc.data ?? {}; // an empty main file is valid: everything defaults
  if (!isMap(data)) {
    out.push(doc.issue([], 'the main file must be a YAML mapping (server:, logging:, metrics:, listeners:, ...)'));
    return { settings: undefined, defaults: undefined, defaultsFailed: true, inline: [], failedInline: new Set(), confDir: undefined, inlineProblems: new Map() };
  }
  const syslog = isMap(data.logging) && isMap(data.logging.syslog) ? data.logging.syslog : undefined;
  if (syslog && typeof syslog.network === 'string') syslog.network = syslog.network.toLowerCase();
  if (syslog && typeof syslog.priority === 'string') syslog.priority = syslog.priority.toLowerCase();
  if (isMap(data.defaults)) foldEnumCase(data.defaults);
  if (Array.isArray(data.listeners)) for (const entry of data.listeners) if (isMap(entry)) foldEnumCase(entry);

  let settingsFailed = false;
  let defaultsFailed = false;
  const failedInline = new Set<number>();
  const inlineProblems = new Map<number, FieldPath[]>();
  for (const problem of checkMain(data)) {
    out.push(doc.issue(problem.path, problem.message, { key: problem.key }));
    const [section, index] = problem.path;
    if (section === 'defaults') defaultsFailed = true;
    else if (section === 'listeners' && typeof index === 'number') {
      failedInline.add(index);
      inlineProblems.set(index, [...(inlineProblems.get(index) ?? []), problem.path.slice(2)]);
    } else settingsFailed = true;
  }

  const folder = dirname(doc.absolutePath);
  const conf_dir = confDirOverride !== undefined
    ? resolve(confDirOverride)
    : typeof data.conf_dir === 'string' ? resolve(folder, data.conf_dir) : resolve(folder, 'conf.d');

  const defaults = isMap(data.defaults) ? { doc, raw: data.defaults } : undefined;
  const inline: ListenerSource[] = Array.isArray(data.listeners)
    ? data.listeners.map((raw, i) => ({ doc, base: ['listeners', i], raw: isMap(raw) ? raw : {} }))
    : [];

  let settings: MainSettings | undefined;
  if (!settingsFailed) settings = buildSettings(doc, data, conf_dir, out);
  return { settings, defaults, defaultsFailed, inline, failedInline, confDir: conf_dir, inlineProblems };
}

function buildSettings(doc: YamlSource, data: RawMap, conf_dir: string, out: ConfigIssue[]): MainSettings | undefined {
  const filled: RawMap = {};
  for (const key of ['server', 'logging', 'metrics']) if (data[key] !== undefined) filled[key] = structuredClone(data[key]);
  fillMainDefaults(filled);
  const server = filled.server as RawMap;
  const logging = filled.logging as Record<string, RawMap>;
  const prometheus = (filled.metrics as Record<string, RawMap>).prometheus!;
  const folder = dirname(doc.absolutePath);
  let failed = false;

  let listen = { host: '', port: 0 };
  if (prometheus.enabled === true) {
    const parsed = parseListenAddress(String(prometheus.listen_address));
    if (parsed.ok) listen = parsed.endpoint;
    else {
      failed = true;
      out.push(doc.issue(['metrics', 'prometheus', 'listen_address'], parsed.message));
    }
    if (HEALTH_PATHS.includes(String(prometheus.path))) {
      failed = true;
      out.push(doc.issue(['metrics', 'prometheus', 'path'], `"${String(prometheus.path)}" is a health endpoint; choose another path such as "/metrics"`));
    }
  }
  if (failed) return undefined;

  const syslogPriority = String(logging.syslog!.priority);
  return {
    server: {
      name: typeof server.name === 'string' ? server.name : hostname(),
      shutdown_timeout: parseDuration(String(server.shutdown_timeout)) ?? 0,
    },
    logging: {
      stdout: { enabled: logging.stdout!.enabled === true, use_json: logging.stdout!.use_json === true },
      jsonlog: {
        enabled: logging.jsonlog!.enabled === true,
        path: typeof logging.jsonlog!.path === 'string' ? resolve(folder, logging.jsonlog!.path) : '',
      },
      syslog: {
        enabled: logging.syslog!.enabled === true,
        network: logging.syslog!.network as MainSettings['logging']['syslog']['network'],
        address: typeof logging.syslog!.address === 'string' ? logging.syslog!.address : '',
        tag: String(logging.syslog!.tag),
        priority: PRIORITY_ALIASES[syslogPriority] ?? (syslogPriority as SyslogPriority),
      },
    },
    metrics: {
      prometheus: {
        enabled: prometheus.enabled === true,
        listen_address: typeof prometheus.listen_address === 'string' ? prometheus.listen_address : '',
        listen,
        path: String(prometheus.path),
      },
    },
    conf_dir,
    config_file: doc.absolutePath,
  };
}
