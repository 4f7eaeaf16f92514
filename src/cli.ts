#!/usr/bin/env node
/**
 * The `packetpony` command: parse arguments, load and check the configuration, then either report
 * (--check) or run the supervisor. Exit status: 0 ok, 1 invalid configuration or start-up failure,
 * 2 bad usage.
 */
import { parseArgs, USAGE, type CliOptions } from './cli-args.js';
import { defaultConfigFile, loadConfig } from './config/load.js';
import { ConfigInvalidError, formatIssue, PacketPonyError, UsageError } from './errors.js';
import { packageVersion } from './paths.js';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

function fail(message: string): never {
  process.stderr.write(`packetpony: ${message}\n`);
  process.exit(EXIT_FAILURE);
}

async function main(argv: readonly string[]): Promise<void> {
  let options: CliOptions;
  try {
    options = parseArgs(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`packetpony: ${error.message}\n\n${USAGE}\n`);
    process.exit(EXIT_USAGE);
  }
  if (options.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (options.version) {
    process.stdout.write(`packetpony ${packageVersion()}\n`);
    return;
  }

  const configFile = options.config ?? defaultConfigFile();
  let loaded: ReturnType<typeof loadConfig>;
  try {
    loaded = loadConfig({ configFile, confDir: options.confDir });
  } catch (error) {
    if (error instanceof ConfigInvalidError) {
      for (const issue of error.issues) process.stderr.write(`${formatIssue(issue)}\n`);
      const errors = error.issues.filter((i) => i.severity === 'error').length;
      fail(`configuration invalid: ${errors} error${errors === 1 ? '' : 's'}`);
    }
    if (error instanceof PacketPonyError) fail(error.message);
    throw error;
  }
  for (const warning of loaded.warnings) process.stderr.write(`${formatIssue(warning)}\n`);

  const names = loaded.config.listeners.map((l) => l.name);
  if (options.check) {
    const count = `${names.length} listener${names.length === 1 ? '' : 's'}`;
    process.stdout.write(`configuration OK: ${count}${names.length > 0 ? ` (${names.join(', ')})` : ''}\n`);
    return;
  }

  const { runDaemon } = await import('./supervisor/index.js');
  await runDaemon(loaded.config, { configFile, confDir: options.confDir });
}

main(process.argv.slice(2)).catch((error: unknown) => {
  // Anything reaching here is a bug, not a user error: say so plainly, with the stack for a report.
  process.stderr.write(`packetpony: internal error: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(EXIT_FAILURE);
});
