/**
 * Errors a user can meet. Each class has a stable `code` (PP_ERR_<AREA>_<WHAT>) documented in
 * packetpony(8), and a message that says what to do. Refusing a connection is not an error: policy
 * decisions are verdicts (src/policy), not exceptions.
 */

export class PacketPonyError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** One problem in one configuration file, with its position. */
export interface ConfigIssue {
  readonly file: string;
  readonly line: number;
  readonly col: number;
  /** Dotted path of the field (`rate_limits.action`, `listeners[0].protocol`); '' for the document. */
  readonly field: string;
  readonly message: string;
  /** Warnings are printed but do not make the configuration invalid. */
  readonly severity: 'error' | 'warning';
}

export function formatIssue(issue: ConfigIssue): string {
  const where = `${issue.file}:${issue.line}:${issue.col}`;
  const prefix = issue.severity === 'warning' ? 'warning: ' : '';
  return issue.field === ''
    ? `${where}: ${prefix}${issue.message}`
    : `${where}: ${prefix}${issue.field}: ${issue.message}`;
}

/** The configuration cannot be used; `issues` holds every error found (and the warnings). */
export class ConfigInvalidError extends PacketPonyError {
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[]) {
    const errors = issues.filter((i) => i.severity === 'error');
    super(
      'PP_ERR_CONFIG_INVALID',
      `invalid configuration (${errors.length} error${errors.length === 1 ? '' : 's'}):\n` +
        errors.map(formatIssue).join('\n'),
    );
    this.issues = issues;
  }
}

/** A file or folder named by the command line or the main file cannot be read. */
export class ConfigUnreadableError extends PacketPonyError {
  constructor(path: string, reason: string, options?: { cause?: unknown }) {
    super('PP_ERR_CONFIG_UNREADABLE', `${path}: ${reason}`, options);
  }
}

/** Bad command-line usage (exit status 2). */
export class UsageError extends PacketPonyError {
  constructor(message: string) {
    super('PP_ERR_USAGE', message);
  }
}

/** A log destination cannot be used: the JSON log file cannot be opened, a syslog address is malformed. */
export class LogSinkError extends PacketPonyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PP_ERR_LOG_SINK', message, options);
  }
}

/** The HTTP server for metrics and health checks cannot listen on its address. */
export class MetricsListenError extends PacketPonyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PP_ERR_METRICS_LISTEN', message, options);
  }
}
