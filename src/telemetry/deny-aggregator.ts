/**
 * Keeps refusals from flooding the logs under attack. The first refusal of a source (address and
 * reason) in an interval is emitted at once; the rest of that interval are counted and emitted as
 * one event with `count` when it ends. Memory is bounded: beyond `maxSources` tracked sources, the
 * refusals of new sources are folded into one summary per interval.
 */
import type { LimitAction, Protocol } from '../config/types.js';
import type { DenyEvent, DenyReason, LogEvent } from './events.js';

interface Entry {
  ip: string;
  port: number;
  reason: DenyReason;
  action: DenyEvent['action'];
  suppressed: number;
}

export interface DenyAggregatorOptions {
  readonly listener: string;
  readonly protocol: Protocol;
  readonly intervalMs?: number;
  readonly maxSources?: number;
  readonly now?: () => number;
}

export class DenyAggregator {
  readonly #emit: (event: LogEvent) => void;
  readonly #listener: string;
  readonly #protocol: Protocol;
  readonly #maxSources: number;
  readonly #now: () => number;
  readonly intervalMs: number;
  #entries = new Map<string, Entry>();
  #overflow = 0;

  constructor(emit: (event: LogEvent) => void, options: DenyAggregatorOptions) {
    this.#emit = emit;
    this.#listener = options.listener;
    this.#protocol = options.protocol;
    this.intervalMs = options.intervalMs ?? 10_000;
    this.#maxSources = options.maxSources ?? 10_000;
    this.#now = options.now ?? Date.now;
  }

  /** Records one refusal (or log_only violation). */
  deny(ip: string, port: number, reason: DenyReason, action: LimitAction | 'deny'): void {
    const key = `${reason}|${ip}`;
    const entry = this.#entries.get(key);
    if (entry) {
      entry.suppressed++;
      return;
    }
    if (this.#entries.size >= this.#maxSources) {
      this.#overflow++;
      return;
    }
    this.#entries.set(key, { ip, port, reason, action, suppressed: 0 });
    this.#emit(this.#event(ip, port, reason, action, 1));
  }

  #event(ip: string, port: number, reason: DenyReason, action: DenyEvent['action'], count: number): DenyEvent {
    return {
      kind: 'deny',
      event_type: 'deny',
      timestamp: this.#now(),
      listener_name: this.#listener,
      protocol: this.#protocol,
      source_ip: ip,
      source_port: port,
      reason,
      action,
      count,
    };
  }

  /** Ends the interval: emits the counts held back, forgets the sources. Called by a timer. */
  flush(): void {
    for (const entry of this.#entries.values()) {
      if (entry.suppressed > 0) this.#emit(this.#event(entry.ip, entry.port, entry.reason, entry.action, entry.suppressed));
    }
    this.#entries = new Map();
    if (this.#overflow > 0) {
      this.#emit({
        kind: 'message',
        timestamp: this.#now(),
        level: 'warning',
        message: `listener ${this.#listener}: ${this.#overflow} more refusals from other sources (too many sources to list)`,
        fields: { listener: this.#listener, count: this.#overflow },
      });
      this.#overflow = 0;
    }
  }
}
