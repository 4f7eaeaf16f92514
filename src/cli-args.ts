/**
 * Command-line parsing. Every long option takes one or two dashes (`-config FILE` as the original
 * spelled it, `--config FILE`, `--config=FILE`), because Go's flag package accepts both and existing
 * unit files and scripts use the single-dash form.
 */
import { UsageError } from './errors.js';

export interface CliOptions {
  readonly config?: string;
  readonly confDir?: string;
  readonly check: boolean;
  readonly version: boolean;
  readonly help: boolean;
}

export const USAGE = `Usage: packetpony [--config FILE] [--conf-dir DIR] [--check] [--version] [--help]

An xinetd-style TCP/UDP forwarder with per-IP rate limits, allowlists, UDP sessions,
logs and Prometheus metrics.

Options:
  -c, --config FILE    main configuration file (default /etc/packetpony/packetpony.yaml,
                       or /etc/packetpony/config.yaml when only that exists)
      --conf-dir DIR   drop-in folder with one listener per *.yaml file (default: the main
                       file's conf_dir, else conf.d beside the main file)
      --check          validate the configuration, print a summary and exit (0 valid, 1 invalid)
      --version        print the version and exit
  -h, --help           print this help and exit

Long options may be written with one dash (-config FILE) or two, and as --option=VALUE.
Signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads, SIGUSR1 reopens the JSON log file.
See packetpony(8) and packetpony.conf(5).`;

type ValueOption = 'config' | 'conf-dir';
type FlagOption = 'check' | 'version' | 'help';

const NAMES: Readonly<Record<string, ValueOption | FlagOption>> = {
  config: 'config',
  c: 'config',
  'conf-dir': 'conf-dir',
  confdir: 'conf-dir',
  check: 'check',
  version: 'version',
  help: 'help',
  h: 'help',
};

export function parseArgs(argv: readonly string[]): CliOptions {
  let config: string | undefined;
  let confDir: string | undefined;
  let check = false;
  let version = false;
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const match = /^--?([A-Za-z][A-Za-z-]*)(?:=(.*))?$/s.exec(arg);
    if (!match) throw new UsageError(arg.startsWith('-') ? `unknown option "${arg}"` : `unexpected argument "${arg}"`);
    const name = NAMES[match[1]!];
    if (name === undefined) throw new UsageError(`unknown option "${arg}"`);
    const inline = match[2];
    if (name === 'config' || name === 'conf-dir') {
      const value = inline ?? argv[++i];
      if (value === undefined || value === '') throw new UsageError(`option "${arg}" needs a value`);
      if (name === 'config') config = value;
      else confDir = value;
      continue;
    }
    if (inline !== undefined) throw new UsageError(`option "--${match[1]}" takes no value`);
    if (name === 'check') check = true;
    else if (name === 'version') version = true;
    else help = true;
  }
  return { config, confDir, check, version, help };
}
