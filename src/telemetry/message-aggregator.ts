/**
 * Warnings that can repeat at packet rate (oversize datagrams, failed sends to a target that is
 * down) are said once per kind and interval: the first at once, the rest as one count when the
 * interval ends. The number of kinds is small and fixed by the caller, so memory is bounded.
 */
import type { LogEvent, LogLevel } from './events.js';

interface Pending {
  count: number;
  message: string;
  level: LogLevel;
  fields: Record<string, string | number | boolean>;
}

export class MessageAggregator {
  readonly #emit: (event: LogEvent) => void;
  readonly #now: () => number;
  #pending = new Map<string, Pending>();

  constructor(emit: (event: LogEvent) => void, now: () => number = Date.now) {
    this.#emit = emit;
    this.#now = now;
  }

  /** `key` groups repeats (e.g. "oversize"); `message` describes the latest one. */
  report(key: string, level: LogLevel, message: string, fields: Record<string, string | number | boolean>): void {
    const pending = this.#pending.get(key);
    if (pending) {
      pending.count++;
      pending.message = message;
      pending.fields = fields;
      return;
    }
    this.#pending.set(key, { count: 0, message, level, fields });
    this.#emit({ kind: 'message', timestamp: this.#now(), level, message, fields });
  }

  flush(): void {
    for (const pending of this.#pending.values()) {
      if (pending.count === 0) continue;
      this.#emit({
        kind: 'message',
        timestamp: this.#now(),
        level: pending.level,
        message: `${pending.message} (and ${pending.count} more like it)`,
        fields: { ...pending.fields, count: pending.count },
      });
    }
    this.#pending = new Map();
  }
}
