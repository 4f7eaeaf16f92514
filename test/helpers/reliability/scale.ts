/**
 * Sizes of the reliability suite. `npm test` (CI) runs every case at a size that fits in a few
 * minutes on two cores; `npm run test:reliability` sets PP_RELIABILITY=full and runs the sizes the
 * issue names (1 GiB, 100,000 sources, 10,000 sessions × 100 datagrams…).
 */
export const FULL = process.env.PP_RELIABILITY === 'full';

/** `ci` under `npm test`, `full` under `npm run test:reliability`. */
export function size<T>(ci: T, full: T): T {
  return FULL ? full : ci;
}

export const KiB = 1024;
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

/** Human figures for t.log() and docs/reliability.md. */
export function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}

/**
 * An upper bound on a delay: the figure in the full run (`npm run test:reliability`, one
 * file at a time); under `npm test`, where the suite shares two cores with itself, that figure plus
 * `slackMs`, which still catches a missing timer or a hang but not a scheduler's hiccup. Lower
 * bounds (a timeout must never fire early) are never loosened. The measured figures are logged.
 */
export function lateBound(strictMs: number, slackMs = 1000): number {
  return FULL ? strictMs : strictMs + slackMs;
}
