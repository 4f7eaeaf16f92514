/**
 * Turns one listener — as written, merged with the main file's `defaults:` and filled with the
 * schema's defaults — into a frozen ListenerConfig, applying the rules a schema cannot express.
 * Every problem is reported where the user wrote the value: in the listener's own file, or in
 * `defaults:` when the value came from there.
 */
import type { ConfigIssue } from '../errors.js';
import { parseListenAddress, parseTargetAddress } from './address.js';
import { parseAllowlistEntry } from './cidr.js';
import { fillListenerDefaults } from './schema.js';
import type {
  AcceptProxyProtocolSettings,
  BalanceMode,
  Endpoint,
  HealthCheckSettings,
  LimitAction,
  ListenerConfig,
  Protocol,
  ProxyProtocolVersion,
  RateLimits,
  TargetConfig,
} from './types.js';
import { bufferSizeOutOfRange, MAX_UDP_BUFFER_SIZE } from './types.js';
import { formatSize, parseDuration, parseSize } from './units.js';
import { formatFieldPath, type FieldPath, type YamlSource } from './yaml-source.js';

export type RawMap = Record<string, unknown>;

/** Where a listener was written: a conf.d file (base []) or an entry of the main file's list. */
export interface ListenerSource {
  readonly doc: YamlSource;
  readonly base: FieldPath;
  readonly raw: RawMap;
  /** The name used when the listener has none: the conf.d file's stem. */
  readonly defaultName?: string;
}

/** The main file's `defaults:` section. */
export interface DefaultsSource {
  readonly doc: YamlSource;
  readonly raw: RawMap;
}

export function isMap(value: unknown): value is RawMap {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function getIn(data: unknown, path: FieldPath): unknown {
  let node = data;
  for (const part of path) {
    if (Array.isArray(node) && typeof part === 'number') node = node[part];
    else if (isMap(node) && typeof part === 'string') node = node[part];
    else return undefined;
  }
  return node;
}

/** Objects merged key by key, recursively; lists and scalars of `over` replace those of `under`. */
export function mergeDefaults(under: RawMap, over: RawMap): RawMap {
  const out: RawMap = structuredClone(under);
  for (const [key, value] of Object.entries(over)) {
    const base = out[key];
    out[key] = isMap(base) && isMap(value) ? mergeDefaults(base, value) : structuredClone(value);
  }
  return out;
}

/** Lower-cases the values the original accepts in any case, before the schema sees them. */
export function foldEnumCase(raw: RawMap): void {
  if (typeof raw.protocol === 'string') raw.protocol = raw.protocol.toLowerCase();
  const limits = raw.rate_limits;
  if (isMap(limits) && typeof limits.action === 'string') limits.action = limits.action.toLowerCase();
}

class ListenerIssues {
  readonly #source: ListenerSource;
  readonly #defaults: DefaultsSource | undefined;
  readonly #out: ConfigIssue[];
  name = '';
  failed = false;

  constructor(source: ListenerSource, defaults: DefaultsSource | undefined, out: ConfigIssue[]) {
    this.#source = source;
    this.#defaults = defaults;
    this.#out = out;
  }

  report(path: FieldPath, message: string, severity: 'error' | 'warning' = 'error'): void {
    if (severity === 'error') this.failed = true;
    const { doc, base, raw } = this.#source;
    if (getIn(raw, path) === undefined && this.#defaults && getIn(this.#defaults.raw, path) !== undefined) {
      const where = ['defaults', ...path];
      this.#out.push(this.#defaults.doc.issue(where, `${message} (from defaults, in listener "${this.name}")`, { severity }));
      return;
    }
    this.#out.push(doc.issue([...base, ...path], message, { severity, field: formatFieldPath([...base, ...path]) }));
  }
}

function duration(value: unknown): number {
  return typeof value === 'string' ? parseDuration(value) ?? 0 : 0;
}

function size(value: unknown): number {
  return typeof value === 'string' || typeof value === 'number' ? parseSize(value) ?? 0 : 0;
}

function count(value: unknown): number {
  return typeof value === 'number' ? value : 0;
}

/**
 * Builds one listener. Both `source.raw` and `defaults.raw` must already have passed the schema's
 * field check. Pushes issues (errors and warnings) to `out`; returns undefined on any error.
 */
export function buildListener(
  source: ListenerSource,
  defaults: DefaultsSource | undefined,
  out: ConfigIssue[],
  schemaProblems: readonly FieldPath[] = [],
): ListenerConfig | undefined {
  const issues = new ListenerIssues(source, defaults, out);
  // Values the schema already rejected are not checked again, so one mistake gives one message.
  const rejected = schemaProblems.map((path) => formatFieldPath(path));
  const fine = (...paths: FieldPath[]): boolean =>
    paths.every((path) => {
      const text = formatFieldPath(path);
      return !rejected.some((r) => r === text || r.startsWith(`${text}.`) || r.startsWith(`${text}[`) || text.startsWith(`${r}.`));
    });
  if (schemaProblems.length > 0) issues.failed = true;
  const merged = defaults ? mergeDefaults(defaults.raw, source.raw) : structuredClone(source.raw);
  if (merged.name === undefined && source.defaultName !== undefined) merged.name = source.defaultName;
  issues.name = typeof merged.name === 'string' ? merged.name : source.defaultName ?? '?';

  if (merged.name === undefined) {
    issues.report([], 'missing required key "name" (every listener in the main file needs one)');
  } else if (source.raw.name === undefined && !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(String(merged.name))) {
    issues.report([], `the listener is named after its file, "${String(merged.name)}", which is not a valid name: add a "name:" with letters, digits, ".", "_" and "-"`);
  }
  const missing = fillListenerDefaults(merged);
  // A required key inside a section was already reported by the field check.
  for (const problem of missing) if (fine(problem.path)) issues.report(problem.path, problem.message);
  if (missing.length > 0 || (issues.failed && schemaProblems.length === 0)) return undefined;

  const protocol = merged.protocol as Protocol;
  const listen = fine(['listen_address']) ? parseListenAddress(String(merged.listen_address)) : undefined;
  if (listen && !listen.ok) issues.report(['listen_address'], listen.message);
  const targets = checkTargets(merged, issues, fine);

  const allowlist = checkCidrList(merged.allowlist, ['allowlist'], issues, fine);
  const denylist = checkCidrList(merged.denylist, ['denylist'], issues, fine);
  if ((!Array.isArray(merged.allowlist) || merged.allowlist.length === 0) && fine(['allowlist'])) {
    issues.report(
      merged.allowlist === undefined ? [] : ['allowlist'],
      'the allowlist is empty or absent, so every client is denied; add e.g. "0.0.0.0/0" and "::/0" to allow everyone',
      'warning',
    );
  }

  const rate_limits = checkRateLimits(section(merged.rate_limits), issues, fine);

  const tcpRaw = section(merged.tcp);
  const udpRaw = section(merged.udp);
  const udpLogging = section(udpRaw.logging);
  const session_timeout = duration(udpRaw.session_timeout);
  if (protocol === 'udp' && session_timeout === 0 && fine(['udp', 'session_timeout'])) {
    issues.report(['udp', 'session_timeout'], 'must be longer than 0s, e.g. "30s"');
  }
  const buffer_size = typeof udpRaw.buffer_size === 'number' ? udpRaw.buffer_size : size(udpRaw.buffer_size);
  if ((buffer_size < 64 || buffer_size > MAX_UDP_BUFFER_SIZE) && fine(['udp', 'buffer_size'])) {
    issues.report(['udp', 'buffer_size'], bufferSizeOutOfRange(String(udpRaw.buffer_size)));
  }
  const other = protocol === 'tcp' ? 'udp' : 'tcp';
  if (source.raw[other] !== undefined && (protocol === 'tcp' || protocol === 'udp')) {
    issues.report([other], `"${other}:" settings have no effect on a ${protocol} listener`, 'warning');
  }
  const proxy_protocol = (merged.proxy_protocol ?? 'off') as ProxyProtocolVersion;
  if (protocol === 'udp' && proxy_protocol === 'v1' && fine(['proxy_protocol'])) {
    issues.report(['proxy_protocol'], '"v1" is the text header of TCP connections: use "v2" for a UDP listener');
  }
  const accept_proxy_protocol = checkAcceptProxy(merged.accept_proxy_protocol, protocol, issues, fine);
  const health_check = checkHealthCheck(merged.health_check, issues, fine);
  const balance = merged.balance as BalanceMode;
  if (targets !== undefined && targets.length === 1 && source.raw.balance !== undefined && fine(['balance'])) {
    issues.report(['balance'], 'has no effect with a single target', 'warning');
  }
  if (issues.failed || !listen?.ok || targets === undefined) return undefined;

  return {
    name: String(merged.name),
    protocol,
    listen_address: String(merged.listen_address),
    target_address: targets.length === 1 && merged.targets === undefined ? String(merged.target_address) : targets.map((t) => t.address).join(','),
    listen: listen.endpoint,
    target: targets[0]!.endpoint,
    targets,
    balance,
    workers: merged.workers === 'auto' ? 'auto' : Number(merged.workers ?? 1),
    health_check,
    ipv6_only: false,
    allowlist,
    denylist,
    proxy_protocol,
    accept_proxy_protocol,
    rate_limits,
    shared: section(merged.rate_limits).shared === true,
    shared_limits: null,
    tcp: {
      connect_timeout: duration(tcpRaw.connect_timeout),
      read_timeout: duration(tcpRaw.read_timeout),
      write_timeout: duration(tcpRaw.write_timeout),
      idle_timeout: duration(tcpRaw.idle_timeout),
    },
    udp: {
      session_timeout,
      buffer_size,
      logging: {
        log_session_start: udpLogging.log_session_start === true,
        log_session_close: udpLogging.log_session_close === true,
        periodic_log_interval: duration(udpLogging.periodic_log_interval),
        periodic_log_bytes: size(udpLogging.periodic_log_bytes),
        min_log_duration: duration(udpLogging.min_log_duration),
        min_log_bytes: size(udpLogging.min_log_bytes),
      },
    },
    source_file: source.doc.absolutePath,
  };
}

function section(value: unknown): RawMap {
  return isMap(value) ? value : {};
}

type Fine = (...paths: FieldPath[]) => boolean;

/**
 * `target_address` or `targets:`, exactly one of them. Returns every target (one for
 * `target_address`), or undefined when they are unusable (the problems are reported).
 */
function checkTargets(merged: RawMap, issues: ListenerIssues, fine: Fine): TargetConfig[] | undefined {
  const list = merged.targets;
  if (merged.target_address !== undefined && list !== undefined) {
    issues.report(['targets'], '"targets" and "target_address" cannot both be set: list every target under "targets:" (one "- address:" each)');
    return undefined;
  }
  if (list === undefined) {
    if (merged.target_address === undefined) {
      issues.report([], 'missing required key "target_address" (e.g. "192.0.2.10:80"), or a "targets:" list');
      return undefined;
    }
    if (!fine(['target_address'])) return undefined;
    const target = parseTargetAddress(String(merged.target_address));
    if (!target.ok) {
      issues.report(['target_address'], target.message);
      return undefined;
    }
    return [{ address: String(merged.target_address), endpoint: target.endpoint, backup: false }];
  }
  if (!Array.isArray(list) || !fine(['targets'])) return undefined;
  const targets: TargetConfig[] = [];
  const seen = new Map<string, number>();
  let usable = true;
  list.forEach((raw: unknown, i) => {
    if (!isMap(raw) || typeof raw.address !== 'string' || !fine(['targets', i])) {
      usable = false;
      return;
    }
    const parsed = parseTargetAddress(raw.address);
    if (!parsed.ok) {
      issues.report(['targets', i, 'address'], parsed.message);
      usable = false;
      return;
    }
    const key = endpointKey(parsed.endpoint);
    const first = seen.get(key);
    if (first !== undefined) {
      issues.report(['targets', i, 'address'], `"${raw.address}" is already listed as targets[${first}]; list each target once`);
      usable = false;
      return;
    }
    seen.set(key, i);
    targets.push({ address: raw.address.trim(), endpoint: parsed.endpoint, backup: raw.backup === true });
  });
  if (!usable) return undefined;
  if (targets.every((t) => t.backup)) {
    issues.report(['targets'], 'every target is a backup: at least one must be a regular target (backups are used only while none of those is up)');
    return undefined;
  }
  return targets;
}

function endpointKey(endpoint: Endpoint): string {
  return `${endpoint.host.toLowerCase()}|${endpoint.port}`;
}

/** A list of addresses and CIDR networks (allowlist, denylist, trusted fronts), canonical. */
function checkCidrList(value: unknown, at: FieldPath, issues: ListenerIssues, fine: Fine): string[] {
  const out: string[] = [];
  const raw = Array.isArray(value) ? (value as unknown[]) : [];
  raw.forEach((entry, i) => {
    if (typeof entry !== 'string' || !fine([...at, i])) return;
    const parsed = parseAllowlistEntry(entry);
    if (parsed.ok) out.push(parsed.cidr);
    else issues.report([...at, i], parsed.message);
  });
  return out;
}

function checkAcceptProxy(value: unknown, protocol: Protocol, issues: ListenerIssues, fine: Fine): AcceptProxyProtocolSettings | null {
  if (!isMap(value)) return null;
  if (protocol === 'udp' && fine(['accept_proxy_protocol'])) {
    issues.report(['accept_proxy_protocol'], 'is for TCP listeners only: a UDP listener cannot read a PROXY protocol header');
    return null;
  }
  const trusted = checkCidrList(value.trusted, ['accept_proxy_protocol', 'trusted'], issues, fine);
  const header_timeout = duration(value.header_timeout);
  if (header_timeout === 0 && fine(['accept_proxy_protocol', 'header_timeout'])) {
    issues.report(['accept_proxy_protocol', 'header_timeout'], 'must be longer than 0s, e.g. "3s"');
  }
  return { trusted, header_timeout };
}

function checkHealthCheck(value: unknown, issues: ListenerIssues, fine: Fine): HealthCheckSettings | null {
  if (!isMap(value)) return null;
  const at = (key: string): FieldPath => ['health_check', key];
  const settings: HealthCheckSettings = {
    interval: duration(value.interval),
    timeout: duration(value.timeout),
    rise: count(value.rise),
    fall: count(value.fall),
    send: typeof value.send === 'string' ? value.send : '',
    expect: typeof value.expect === 'string' ? value.expect : '',
  };
  for (const key of ['interval', 'timeout'] as const) {
    if (settings[key] === 0 && fine(at(key))) issues.report(at(key), `must be longer than 0s, e.g. "${key === 'interval' ? '5s' : '2s'}"`);
  }
  for (const key of ['send', 'expect'] as const) {
    // One character per byte: anything beyond \xff would have no single-byte meaning.
    const wide = [...settings[key]].find((c) => c.codePointAt(0)! > 0xff);
    if (wide !== undefined && fine(at(key))) {
      issues.report(at(key), `"${wide}" is not a single byte: write bytes as \\x.. escapes in a double-quoted string (every character must be \\x00 to \\xff)`);
    }
  }
  return settings;
}

function checkRateLimits(raw: RawMap, issues: ListenerIssues, fine: (...paths: FieldPath[]) => boolean): RateLimits {
  const limits: RateLimits = {
    max_connections_per_ip: count(raw.max_connections_per_ip),
    connections_window: duration(raw.connections_window),
    max_connection_attempts_per_ip: count(raw.max_connection_attempts_per_ip),
    attempts_window: duration(raw.attempts_window),
    max_bandwidth_per_ip: size(raw.max_bandwidth_per_ip),
    bandwidth_window: duration(raw.bandwidth_window),
    max_total_connections: count(raw.max_total_connections),
    action: raw.action as LimitAction,
    throttle_minimum: size(raw.throttle_minimum),
  };
  const at = (key: string): FieldPath => ['rate_limits', key];

  const windowed: Array<[limit: keyof RateLimits, window: keyof RateLimits, example: string]> = [
    ['max_connection_attempts_per_ip', 'attempts_window', '"1m"'],
    ['max_bandwidth_per_ip', 'bandwidth_window', '"1m"'],
  ];
  for (const [limit, window, example] of windowed) {
    if (!fine(at(limit), at(window))) continue;
    if (limits[limit] !== 0 && raw[window] === undefined) {
      issues.report(at(limit), `needs "${window}", the period it counts over (e.g. ${window}: ${example})`);
    } else if (limits[limit] !== 0 && limits[window] === 0) {
      issues.report(at(window), `must be longer than 0s, e.g. ${example}`);
    } else if (limits[limit] === 0 && raw[window] !== undefined && raw[limit] === undefined) {
      issues.report(at(window), `has no effect without "${limit}"`, 'warning');
    }
  }

  if (!fine(at('action'), at('throttle_minimum'), at('max_bandwidth_per_ip'))) return limits;
  if (limits.action === 'throttle') {
    if (raw.throttle_minimum === undefined) {
      issues.report(at('action'), 'action "throttle" needs "throttle_minimum", the bandwidth a throttled client still gets (e.g. throttle_minimum: "1MB")');
    } else if (limits.throttle_minimum === 0) {
      issues.report(at('throttle_minimum'), 'must be more than 0 (a throttled client would get nothing: use action "drop" for that)');
    } else if (limits.max_bandwidth_per_ip !== 0 && limits.throttle_minimum > limits.max_bandwidth_per_ip) {
      issues.report(
        at('throttle_minimum'),
        `${formatSize(limits.throttle_minimum)} is more than max_bandwidth_per_ip (${formatSize(limits.max_bandwidth_per_ip)}): a throttled client would get more than the limit; lower it`,
      );
    }
    if (limits.max_bandwidth_per_ip === 0) {
      issues.report(at('action'), '"throttle" slows down clients over max_bandwidth_per_ip, which is not set; the other limits refuse as with "drop"', 'warning');
    }
  } else if (raw.throttle_minimum !== undefined) {
    issues.report(at('throttle_minimum'), `has no effect unless action is "throttle" (it is "${limits.action}")`, 'warning');
  }
  const perAddress = limits.max_connections_per_ip + limits.max_connection_attempts_per_ip + limits.max_bandwidth_per_ip > 0;
  if (raw.shared === true && !perAddress && fine(at('shared'))) {
    issues.report(at('shared'), 'has no effect: no per-address limit (max_connections_per_ip, max_connection_attempts_per_ip, max_bandwidth_per_ip) is set', 'warning');
  }
  return limits;
}
