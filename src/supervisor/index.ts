/**
 * The supervisor: owns the listening sockets and one child process per listener, restarts children,
 * reloads configuration, and is the only place log sinks and the metrics server live.
 * It never imports src/proxy (the child's side).
 */
import type { DaemonConfig } from '../config/types.js';

export interface DaemonOptions {
  readonly configFile: string;
  readonly confDir?: string;
}

export async function runDaemon(config: DaemonConfig, _options: DaemonOptions): Promise<void> {
  process.stderr.write(`packetpony: the daemon is not built yet (${config.listeners.length} listeners configured)\n`);
  process.exitCode = 1;
}
