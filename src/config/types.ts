/**
 * The validated, normalised configuration that the rest of PacketPony consumes.
 *
 * Keys keep the YAML spelling (snake_case) so that a key in a file greps straight to the code that
 * reads it. Values are normalised: every duration is a number of milliseconds, every size a number of
 * bytes, every enum lower-case, every CIDR in canonical `network/prefix` form. Zero means "off" for
 * limits and timeouts. Objects are plain data (they cross the IPC channel as JSON) and deep-frozen.
 */

export type Protocol = 'tcp' | 'udp';
export type LimitAction = 'drop' | 'throttle' | 'log_only';
export type SyslogNetwork = 'udp' | 'tcp' | 'unix';
export type BalanceMode = 'round_robin' | 'least_connections' | 'source_hash';
export type ProxyProtocolVersion = 'off' | 'v1' | 'v2';
export type SyslogPriority =
  | 'emerg' | 'alert' | 'crit' | 'err' | 'warning' | 'notice' | 'info' | 'debug';

/** A parsed `host:port`. `host` is '' for "all interfaces"; IPv6 hosts are stored without brackets. */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
}

export interface RateLimits {
  /** Connections (UDP: sessions) open at once from one address; 0 = no cap. */
  readonly max_connections_per_ip: number;
  /** Accepted for compatibility with the original; the per-IP cap above needs no window. */
  readonly connections_window: number;
  readonly max_connection_attempts_per_ip: number;
  readonly attempts_window: number;
  /** Bytes, both directions, per `bandwidth_window`; 0 = no cap. */
  readonly max_bandwidth_per_ip: number;
  readonly bandwidth_window: number;
  /** Connections (UDP: sessions) open at once on the listener; 0 = no cap. */
  readonly max_total_connections: number;
  readonly action: LimitAction;
  /** Bytes per `bandwidth_window` a throttled address still gets. */
  readonly throttle_minimum: number;
}

export interface TcpSettings {
  readonly connect_timeout: number;
  readonly read_timeout: number;
  readonly write_timeout: number;
  readonly idle_timeout: number;
}

export interface UdpLoggingSettings {
  readonly log_session_start: boolean;
  readonly log_session_close: boolean;
  readonly periodic_log_interval: number;
  readonly periodic_log_bytes: number;
  readonly min_log_duration: number;
  readonly min_log_bytes: number;
}

/**
 * The largest udp.buffer_size accepted. No UDP payload exceeds 65,527 bytes (IPv6; 65,507 over
 * IPv4), so from 65536 on every value means "no datagram is too large"; the range goes further
 * only so that a configuration written for the original ("128KB") starts unchanged, while a slip
 * such as "4096MB" is still caught.
 */
export const MAX_UDP_BUFFER_SIZE = 1024 * 1024;
/** The error for a udp.buffer_size out of range; `got` is the value as written. */
export function bufferSizeOutOfRange(got: string): string {
  return `must be between 64 bytes and 1MB (got ${got}); 65536 ("64KB") lets every datagram through`;
}

export interface UdpSettings {
  readonly session_timeout: number;
  /**
   * Largest datagram accepted, as configured (64 to MAX_UDP_BUFFER_SIZE). Values from 65536 up
   * all mean the same, since no datagram is larger: the relay reads at most that much.
   */
  readonly buffer_size: number;
  readonly logging: UdpLoggingSettings;
}

/** One forwarding target of a listener. */
export interface TargetConfig {
  /** As written (`10.0.0.1:80`); the `target` label of packetpony_target_up. */
  readonly address: string;
  readonly endpoint: Endpoint;
  /** Used only while no non-backup target is up. */
  readonly backup: boolean;
}

/** Active health checks (`health_check:`); times in ms. */
export interface HealthCheckSettings {
  readonly interval: number;
  readonly timeout: number;
  readonly rise: number;
  readonly fall: number;
  /** Sent once connected (TCP) or as the probe datagram (UDP); one character per byte; '' = nothing. */
  readonly send: string;
  /** Must appear in what the target answers; '' = not checked. */
  readonly expect: string;
}

/** Reading a PROXY protocol header from trusted fronts (`accept_proxy_protocol:`). */
export interface AcceptProxyProtocolSettings {
  /** Canonical CIDRs of the fronts allowed to send one. */
  readonly trusted: readonly string[];
  readonly header_timeout: number;
}

export interface ListenerConfig {
  readonly name: string;
  readonly protocol: Protocol;
  /** As written in the file, for messages. */
  readonly listen_address: string;
  readonly target_address: string;
  readonly listen: Endpoint;
  /** The only target, or with `targets:` the first one (for messages). */
  readonly target: Endpoint;
  /**
   * Every target, at least one: `target_address` alone gives a list of that one. With `targets:`,
   * `target_address` above is the addresses joined by commas, for messages.
   */
  readonly targets: readonly TargetConfig[];
  readonly balance: BalanceMode;
  /**
   * Processes serving the listener, as written: a count, or 'auto' for the cores the process may
   * use (resolved by the supervisor: src/supervisor/worker-count.ts).
   */
  readonly workers: number | 'auto';
  /** null: no active health checks. */
  readonly health_check: HealthCheckSettings | null;
  /**
   * Bind `[::]` as IPv6-only. Set when another listener of the same protocol binds `0.0.0.0` on the
   * same port (SPEC's "IPv6 Dual-Stack Proxy" pair); otherwise `[::]` and `:port` are dual-stack.
   */
  readonly ipv6_only: boolean;
  /** Canonical CIDRs (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7/32`). Empty denies everyone. */
  readonly allowlist: readonly string[];
  /** Canonical CIDRs always refused, checked before the allowlist. Empty: none. */
  readonly denylist: readonly string[];
  readonly proxy_protocol: ProxyProtocolVersion;
  /** null: clients connect directly (no PROXY protocol header is read). */
  readonly accept_proxy_protocol: AcceptProxyProtocolSettings | null;
  readonly rate_limits: RateLimits;
  /** rate_limits.shared as written: this listener's per-address counts are the fleet's. */
  readonly shared: boolean;
  /**
   * The main file's shared_limits when `shared` (filled in once both files are read); null for a
   * listener that counts on its own.
   */
  readonly shared_limits: SharedLimitsSettings | null;
  readonly tcp: TcpSettings;
  readonly udp: UdpSettings;
  /** The file this listener was read from (a conf.d file or the main file). */
  readonly source_file: string;
}

/**
 * Whether a listener chooses among targets and tracks their health (several targets, or health
 * checks). Without either, a listener dials its one target as it always has, with no pool at all.
 */
export function usesTargetPool(config: Pick<ListenerConfig, 'targets' | 'health_check'>): boolean {
  return config.targets.length > 1 || config.health_check !== null;
}

export interface StdoutSettings {
  readonly enabled: boolean;
  readonly use_json: boolean;
}

export interface JsonLogSettings {
  readonly enabled: boolean;
  readonly path: string;
}

export interface SyslogSettings {
  readonly enabled: boolean;
  readonly network: SyslogNetwork;
  readonly address: string;
  readonly tag: string;
  readonly priority: SyslogPriority;
}

export interface LoggingSettings {
  readonly stdout: StdoutSettings;
  readonly jsonlog: JsonLogSettings;
  readonly syslog: SyslogSettings;
}

export interface PrometheusSettings {
  readonly enabled: boolean;
  readonly listen_address: string;
  readonly listen: Endpoint;
  readonly path: string;
}

export interface ServerSettings {
  readonly name: string;
  readonly shutdown_timeout: number;
}

/** Everything the main file holds except listeners. */
/** What the fleet does while its store cannot be reached (shared_limits.on_store_down). */
export type StoreDownPolicy = 'local' | 'open' | 'closed';

/** shared_limits: per-address counts shared by a fleet through a Valkey/Redis store. */
export interface SharedLimitsSettings {
  /** The store's URL as written (it holds no password: that is a validation error). */
  readonly store: string;
  readonly host: string;
  readonly port: number;
  readonly db: number;
  /** '' for none (the default user). */
  readonly username: string;
  /** From password_file or password_env; '' for none. Never logged. */
  readonly password: string;
  /** rediss:// */
  readonly tls: boolean;
  /** This host's name in the fleet. */
  readonly instance: string;
  /** ms */
  readonly sync_interval: number;
  readonly on_store_down: StoreDownPolicy;
  readonly key_prefix: string;
}

export interface MainSettings {
  readonly server: ServerSettings;
  readonly logging: LoggingSettings;
  readonly metrics: { readonly prometheus: PrometheusSettings };
  /** null: no fleet; listeners with rate_limits.shared are then an error. */
  readonly shared_limits: SharedLimitsSettings | null;
  /** Absolute path of the drop-in folder. */
  readonly conf_dir: string;
  /** Absolute path of the main file. */
  readonly config_file: string;
}

export interface DaemonConfig extends MainSettings {
  readonly listeners: readonly ListenerConfig[];
}
