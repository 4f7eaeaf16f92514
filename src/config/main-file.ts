/**
 * The main file: server, logging and metrics settings, where the drop-in folder is, the listener
 * `defaults:` and any listeners written inline (the original's single-file layout).
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import type { ConfigIssue } from '../errors.js';
import { parseListenAddress } from './address.js';
import { foldEnumCase, isMap, type DefaultsSource, type ListenerSource, type RawMap } from './listener.js';
import { checkMain, fillMainDefaults } from './schema.js';
import type { MainSettings, SharedLimitsSettings, StoreDownPolicy, SyslogPriority } from './types.js';
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
  const shared = isMap(data.shared_limits) ? data.shared_limits : undefined;
  if (shared && typeof shared.on_store_down === 'string') shared.on_store_down = shared.on_store_down.toLowerCase();
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
  for (const key of ['server', 'logging', 'metrics', 'shared_limits']) if (data[key] !== undefined) filled[key] = structuredClone(data[key]);
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
  const name = typeof server.name === 'string' ? server.name : hostname();
  const shared_limits = isMap(filled.shared_limits) ? readSharedLimits(doc, filled.shared_limits, name, out) : null;
  if (shared_limits === undefined) failed = true;
  if (failed) return undefined;

  const syslogPriority = String(logging.syslog!.priority);
  return {
    server: {
      name,
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
    shared_limits: shared_limits ?? null,
    conf_dir,
    config_file: doc.absolutePath,
  };
}

const STORE_PORT = 6379;
const MIN_SYNC_INTERVAL_MS = 10;
const MAX_SYNC_INTERVAL_MS = 10_000;

/**
 * shared_limits, checked beyond the schema: the store URL, the password's source (read now, so a
 * missing file is a start-up error with its place, never a surprise at the first sync), the
 * interval's range. undefined when something is wrong (reported in `out`).
 */
function readSharedLimits(doc: YamlSource, raw: RawMap, serverName: string, out: ConfigIssue[]): SharedLimitsSettings | undefined {
  const at = (key: string): FieldPath => ['shared_limits', key];
  const errors = out.length;
  const report = (key: string, message: string): void => void out.push(doc.issue(at(key), message));

  const store = String(raw.store);
  const url = parseStoreUrl(store);
  if (typeof url === 'string') report('store', url);

  let password = '';
  const file = typeof raw.password_file === 'string' ? raw.password_file : undefined;
  const variable = typeof raw.password_env === 'string' ? raw.password_env : undefined;
  if (file !== undefined && variable !== undefined) {
    report('password_env', 'set either password_file or password_env, not both');
  } else if (file !== undefined) {
    const path = resolve(dirname(doc.absolutePath), file);
    try {
      password = readFileSync(path, 'utf8').split(/\r?\n/, 1)[0]!.trim();
      if (password === '') report('password_file', `${path} is empty: write the password on its first line`);
    } catch (error) {
      report('password_file', `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}; it must be readable by the user PacketPony runs as`);
    }
  } else if (variable !== undefined) {
    const value = process.env[variable];
    if (value === undefined || value === '') report('password_env', `the environment variable ${variable} is not set (or empty); set it for the daemon, e.g. in a systemd drop-in (Environment= or EnvironmentFile=)`);
    else password = value;
  }

  const instance = typeof raw.instance === 'string' ? raw.instance : serverName;
  if (raw.instance === undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(instance)) {
    report('store', `server.name "${instance}" cannot name this host in the fleet (letters, digits, ".", "_", "-", at most 64): set shared_limits.instance`);
  }
  const sync_interval = parseDuration(String(raw.sync_interval)) ?? 0;
  if (sync_interval < MIN_SYNC_INTERVAL_MS || sync_interval > MAX_SYNC_INTERVAL_MS) {
    report('sync_interval', `must be between 10ms and 10s (got ${String(raw.sync_interval)}); 100ms suits most fleets`);
  }
  if (out.length > errors || typeof url === 'string') return undefined;
  return {
    store,
    ...url,
    password,
    instance,
    sync_interval,
    on_store_down: String(raw.on_store_down).toLowerCase() as StoreDownPolicy,
    key_prefix: String(raw.key_prefix),
  };
}

/** redis://[user@]host[:port][/db] or rediss://…, or what is wrong with it. */
export function parseStoreUrl(text: string): { host: string; port: number; db: number; username: string; tls: boolean } | string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `"${text}" is not a URL: write redis://HOST:PORT/DB, e.g. "redis://10.0.0.5:6379/0"`;
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    return `"${text}": the scheme must be redis:// (or rediss:// for TLS), e.g. "redis://10.0.0.5:6379/0"`;
  }
  if (url.password !== '') {
    return 'holds a password, which would be shown wherever the URL is (logs, ps, --check): remove it and use password_file or password_env';
  }
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  if (host === '') return `"${text}" names no host, e.g. "redis://10.0.0.5:6379/0"`;
  const port = url.port === '' ? STORE_PORT : Number(url.port);
  const path = url.pathname.replace(/^\//, '');
  if (!/^\d{0,4}$/.test(path)) return `"${text}": the path must be a database number, e.g. "/0"`;
  if (url.search !== '' || url.hash !== '') return `"${text}": options after "?" or "#" are not supported`;
  return { host, port, db: path === '' ? 0 : Number(path), username: decodeURIComponent(url.username), tls: url.protocol === 'rediss:' };
}
