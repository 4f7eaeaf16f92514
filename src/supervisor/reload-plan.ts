/**
 * What a reload changes, decided from what runs and what the files now say. Pure, so every rule is
 * unit-tested without processes:
 * - a main file with errors changes nothing at all;
 * - a drop-in file with errors keeps the last good version of its listener running, while the
 *   other files' valid changes still apply;
 * - a deleted file's listener is removed; a new valid one is added; one whose configuration differs
 *   in any way is changed (handed over to a new child); the rest are not touched.
 */
import { listenersClash, type ConfigReport } from '../config/load.js';
import type { ListenerConfig, MainSettings } from '../config/types.js';

export interface ReloadPlan {
  /** Undefined when the main file has errors: then nothing else in the plan applies. */
  readonly main: MainSettings | undefined;
  readonly add: readonly ListenerConfig[];
  readonly change: readonly ListenerConfig[];
  readonly remove: readonly string[];
  readonly unchanged: readonly string[];
  /** Listeners whose file has errors, kept at their running version. */
  readonly kept: readonly string[];
  /** New listeners left out because they clash with a kept one. */
  readonly conflicts: readonly string[];
}

function sameConfig(a: ListenerConfig, b: ListenerConfig): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export function planReload(running: ReadonlyMap<string, ListenerConfig>, report: ConfigReport): ReloadPlan {
  const mainOutcome = report.files[0];
  if (!report.main || !mainOutcome?.ok) {
    return { main: undefined, add: [], change: [], remove: [], unchanged: [...running.keys()], kept: [], conflicts: [] };
  }
  const failedFiles = new Set(report.files.filter((f) => !f.ok).map((f) => f.path));

  // Last good versions first: a broken file must not lose its listener to a newcomer.
  const desired = new Map<string, ListenerConfig>();
  const kept: string[] = [];
  for (const [name, config] of running) {
    if (failedFiles.has(config.source_file)) {
      desired.set(name, config);
      kept.push(name);
    }
  }
  const conflicts: string[] = [];
  for (const listener of report.listeners) {
    const keptOne = [...desired.values()].find((k) => kept.includes(k.name) && (k.name === listener.name || listenersClash(k, listener)));
    if (keptOne) {
      conflicts.push(listener.name);
      continue;
    }
    desired.set(listener.name, listener);
  }

  const add: ListenerConfig[] = [];
  const change: ListenerConfig[] = [];
  const unchanged: string[] = [];
  for (const [name, config] of desired) {
    const current = running.get(name);
    if (!current) add.push(config);
    else if (sameConfig(current, config)) unchanged.push(name);
    else change.push(config);
  }
  const remove = [...running.keys()].filter((name) => !desired.has(name));
  return { main: report.main, add, change, remove, unchanged, kept, conflicts };
}
