/** The count limits and actions the TCP and UDP policy tests cross with each other, as YAML. */
export type CountLimit = 'connection_limit' | 'attempt_limit' | 'total_limit';
export type Action = 'drop' | 'throttle' | 'log_only';

export const LIMIT_YAML: Record<CountLimit, string> = {
  connection_limit: 'max_connections_per_ip: 2',
  attempt_limit: 'max_connection_attempts_per_ip: 2\nattempts_window: "1m"',
  total_limit: 'max_total_connections: 2',
};

export const ACTION_YAML: Record<Action, string> = {
  drop: 'action: drop',
  // throttle paces bandwidth; there is no slower way to open a connection, so counts refuse.
  throttle: 'action: throttle\nmax_bandwidth_per_ip: "100MB"\nbandwidth_window: "1m"\nthrottle_minimum: "10MB"',
  log_only: 'action: log_only',
};
