/**
 * The supervisor: owns the listening sockets and one child process per listener, restarts children,
 * reloads configuration, and is the only place log sinks and the metrics server live.
 * It never imports src/proxy or src/child (the child's side).
 */
import { formatDuration } from '../config/units.js';
import type { DaemonConfig, MainSettings } from '../config/types.js';
import { PacketPonyError } from '../errors.js';
import { packageVersion } from '../paths.js';
import { Telemetry } from '../telemetry/telemetry.js';
import { ConfigWatcher } from './config-watcher.js';
import { MetricsServer, notReady } from './metrics-server.js';
import { reportPlatform } from './platform-report.js';
import { notifyUnavailable, reloadingMessage, sdNotify } from './sd-notify.js';
import { Supervisor } from './supervisor.js';

export interface DaemonOptions {
  readonly configFile: string;
  readonly confDir?: string;
}

/** A start-up failure a user can fix: said on stderr, exit status 1 (as for a bad configuration). */
function startupFailure(error: unknown): never {
  if (!(error instanceof PacketPonyError)) throw error;
  process.stderr.write(`packetpony: ${error.message}\n`);
  process.exit(1);
}

export async function runDaemon(config: DaemonConfig, options: DaemonOptions): Promise<void> {
  // Log sinks first: a JSON log file that cannot be opened stops the start here, before anything runs.
  let telemetry: Telemetry;
  try {
    telemetry = new Telemetry(config, () => supervisor.listeners);
  } catch (error) {
    startupFailure(error);
  }
  const logger = telemetry.logger;
  const metricsServer = new MetricsServer({
    metrics: telemetry.metrics,
    notReady: () => notReady(supervisor.config.listeners, supervisor.listeners),
    logger,
  });
  /**
   * A reloaded main file: sinks and the metrics server follow it; what fails keeps its old form.
   * Resolves with whether everything was applied.
   */
  const applyMainSettings = async (main: MainSettings): Promise<boolean> => {
    const sinks = await telemetry.applySettings(main).then(
      () => true,
      (error: Error) => (logger.error(`logging settings not applied: ${error.message}; the previous log sinks keep running`), false),
    );
    const server = await metricsServer.apply(main.metrics.prometheus).then(
      () => true,
      (error: Error) => (logger.error(`metrics settings not applied: ${error.message}; the metrics server stays as it was`), false),
    );
    return sinks && server;
  };
  const supervisor: Supervisor = new Supervisor(config, logger, { configFile: options.configFile, confDir: options.confDir }, {
    ...telemetry.hooks,
    reloading: () => sdNotify(reloadingMessage()),
    reloaded: async (result, main) => {
      const applied = main ? await applyMainSettings(main) : true;
      const final = result === 'ok' && !applied ? 'partial' : result;
      telemetry.configReloaded(final);
      sdNotify(`READY=1\nSTATUS=${statusLine(supervisor)}`);
      return final;
    },
  });

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
    sdNotify('STOPPING=1');
    logger.notice(`${signal} received: no new connections; open ones get up to ${formatDuration(supervisor.config.server.shutdown_timeout)} to finish`);
    void watcher.close();
    supervisor
      .shutdown()
      .then(async () => {
        await metricsServer.close();
        logger.info('packetpony stopped');
        await telemetry.close();
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
  process.on('SIGUSR1', () => {
    telemetry.reopen();
    // Queued after the reopen: this line is the first of the new file.
    logger.info('SIGUSR1 received: log files reopened');
  });

  logger.info(`packetpony ${packageVersion()} starting`, {
    server: config.server.name,
    config: options.configFile,
    conf_dir: config.conf_dir,
    listeners: config.listeners.length,
  });
  reportPlatform(logger, new Set(config.listeners.map((l) => l.protocol)));
  const notifying = notifyUnavailable();
  if (notifying !== '') logger.warn(notifying);
  try {
    await metricsServer.apply(config.metrics.prometheus);
  } catch (error) {
    logger.error(error instanceof Error ? error.message : String(error));
    await telemetry.close();
    startupFailure(error);
  }
  supervisor.start();
  await watcher.start();
  await settled(supervisor);
  sdNotify(`READY=1\nSTATUS=${statusLine(supervisor)}`);
}

/** How long start-up waits for every listener to serve (or to be known failing) before READY=1. */
const START_SETTLE_MS = 10_000;

/** Resolves once every listener serves, or is known to be failing (binding or backing off). */
async function settled(supervisor: Supervisor): Promise<void> {
  const deadline = Date.now() + START_SETTLE_MS;
  while (Date.now() < deadline && supervisor.listeners.some((l) => l.state === 'starting')) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function statusLine(supervisor: Supervisor): string {
  const listeners = supervisor.listeners;
  const serving = listeners.filter((l) => l.state === 'ready').length;
  return `${serving} of ${listeners.length} listeners serving`;
}
