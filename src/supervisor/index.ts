/**
 * The supervisor: owns the listening sockets and one child process per listener, restarts children,
 * reloads configuration, and is the only place log sinks and the metrics server live.
 * It never imports src/proxy or src/child (the child's side).
 */
import { formatDuration } from '../config/units.js';
import type { DaemonConfig } from '../config/types.js';
import { packageVersion } from '../paths.js';
import { Logger } from '../telemetry/logger.js';
import { StdoutSink } from '../telemetry/sinks/stdout.js';
import { ConfigWatcher } from './config-watcher.js';
import { Supervisor } from './supervisor.js';

export interface DaemonOptions {
  readonly configFile: string;
  readonly confDir?: string;
}

export async function runDaemon(config: DaemonConfig, options: DaemonOptions): Promise<void> {
  const logger = new Logger([new StdoutSink({ json: config.logging.stdout.use_json })]);
  const supervisor = new Supervisor(config, logger, { configFile: options.configFile, confDir: options.confDir });

  process.on('uncaughtException', (error) => {
    // The children keep serving on their own; taking the supervisor down would take them with it.
    logger.error(`internal error in the supervisor (please report it): ${error.stack ?? String(error)}`);
  });

  let signalled = 0;
  const stop = (signal: NodeJS.Signals): void => {
    signalled++;
    if (signalled > 1) {
      if (signal !== 'SIGINT') return;
      logger.warn('second SIGINT: stopping now without draining');
      supervisor.kill();
      process.exit(130);
    }
    logger.notice(`${signal} received: no new connections; open ones get up to ${formatDuration(supervisor.config.server.shutdown_timeout)} to finish`);
    void watcher.close();
    supervisor
      .shutdown()
      .then(async () => {
        logger.info('packetpony stopped');
        await logger.close();
        process.exit(0);
      })
      .catch((error: unknown) => {
        logger.error(`shutdown failed: ${String(error)}`);
        process.exit(1);
      });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  const watcher = new ConfigWatcher(options.configFile, config.conf_dir, (reason) => void reload(`file change: ${reason}`));
  const reload = async (trigger: string): Promise<void> => {
    await supervisor.reload(trigger);
    await watcher.retarget(supervisor.config.conf_dir);
  };
  process.on('SIGHUP', () => void reload('SIGHUP'));
  process.on('SIGUSR1', () => logger.reopen());

  logger.info(`packetpony ${packageVersion()} starting`, {
    server: config.server.name,
    config: options.configFile,
    conf_dir: config.conf_dir,
    listeners: config.listeners.length,
  });
  supervisor.start();
  await watcher.start();
}
