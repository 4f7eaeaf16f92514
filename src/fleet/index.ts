/**
 * Shared limits for one listener's child: the store connection and the sync, started together
 * (child/main.ts) for a listener with rate_limits.shared, and stopped together.
 */
import type { ListenerConfig } from '../config/types.js';
import type { RateLimiter } from '../policy/index.js';
import type { LogEvent } from '../telemetry/events.js';
import type { ListenerStats } from '../telemetry/stats.js';
import { exchangeTimeoutMs, LimitSync } from './limit-sync.js';
import { RedisStore } from './redis-store.js';

export { exchangeTimeoutMs, LimitSync, MAX_BATCH, type LimitSyncOptions } from './limit-sync.js';
export type { SharedStore } from './redis-store.js';

/** Connects to the listener's store and starts exchanging counts; null for a listener that shares nothing. */
export function startSharedLimits(
  config: ListenerConfig,
  limiter: RateLimiter,
  stats: ListenerStats,
  clock: () => number,
  emit: (event: LogEvent) => void,
): LimitSync | null {
  const settings = config.shared_limits;
  if (settings === null) return null;
  const timeoutMs = exchangeTimeoutMs(settings.sync_interval);
  const store = new RedisStore(settings, `packetpony:${settings.instance}:${config.name}`, timeoutMs);
  const sync = new LimitSync({
    listener: config.name,
    limits: config.rate_limits,
    settings,
    limiter,
    store,
    stats,
    clock,
    log: (level, message, fields) => emit({ kind: 'message', timestamp: Date.now(), level, message, fields: { listener: config.name, ...fields } }),
  });
  sync.start();
  return sync;
}
