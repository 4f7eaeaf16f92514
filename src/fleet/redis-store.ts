/**
 * The store of a shared listener, on a Valkey or Redis server through ioredis: one connection per
 * child, one script call per sync interval (exchange-script.ts).
 *
 * Why ioredis (6.1.0): maintained by Redis, Node >= 20 in its engines, a small tree (five small
 * dependencies, no native code), works with Valkey and Redis alike, and has the three things this
 * needs: reconnecting with a backoff we choose, commands that fail at once while disconnected
 * (no offline queue, no retries behind our back: a sync that cannot happen now is skipped, never
 * queued), and a per-command timeout (a store that stops answering, say stopped with SIGSTOP, is
 * noticed within it). node-redis would do as well; iovalkey is a young fork of ioredis.
 *
 * Nothing here is on the proxying path: the child's limiter decides alone, and the sync calls this
 * in the background.
 */
import { Redis } from 'ioredis';
import type { SharedLimitsSettings } from '../config/types.js';
import { EXCHANGE_SCRIPT, exchangeArguments, type ExchangeParams, type OwnCounts } from './exchange-script.js';

/** What the sync needs of a store (a fake in tests). */
export interface SharedStore {
  /** Connected and answering, as far as the client knows. */
  readonly ready: boolean;
  /** Records `entries` and resolves to the rest of the fleet's counts: [attempts, bytes, open] per entry. */
  exchange(params: ExchangeParams, entries: readonly OwnCounts[]): Promise<number[]>;
  /** Why the store is not ready ('' while it is). */
  readonly problem: string;
  /** The first connection is being made and nothing has gone wrong yet. */
  readonly connecting: boolean;
  close(): Promise<void>;
}

/** The longest wait between two connection attempts. */
const MAX_RECONNECT_DELAY_MS = 5_000;

interface ExchangeCommand {
  ppExchange(...args: string[]): Promise<unknown>;
}

export class RedisStore implements SharedStore {
  readonly #client: Redis & ExchangeCommand;
  #problem = 'connecting';

  /** `commandTimeoutMs`: how long one exchange may take before it counts as failed. */
  constructor(settings: SharedLimitsSettings, connectionName: string, commandTimeoutMs: number) {
    const client = new Redis({
      host: settings.host,
      port: settings.port,
      db: settings.db,
      ...(settings.username !== '' ? { username: settings.username } : {}),
      ...(settings.password !== '' ? { password: settings.password } : {}),
      ...(settings.tls ? { tls: { servername: settings.host } } : {}),
      connectionName,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      commandTimeout: commandTimeoutMs,
      connectTimeout: Math.max(1_000, commandTimeoutMs),
      // 100 ms doubling to 5 s, with jitter, so that a fleet does not reconnect in step.
      retryStrategy: (times: number) => Math.round(Math.min(MAX_RECONNECT_DELAY_MS, 100 * 2 ** Math.min(times - 1, 10)) * (0.75 + Math.random() / 2)),
    }) as Redis & ExchangeCommand;
    client.defineCommand('ppExchange', { numberOfKeys: 0, lua: EXCHANGE_SCRIPT });
    // Without a listener an 'error' event would be thrown; the sync reports the problem instead.
    client.on('error', (error: NodeJS.ErrnoException) => {
      this.#problem = describe(error);
    });
    client.on('ready', () => {
      this.#problem = '';
    });
    client.on('close', () => {
      if (this.#problem === '') this.#problem = 'connection closed';
    });
    this.#client = client;
  }

  get ready(): boolean {
    return this.#client.status === 'ready';
  }

  get connecting(): boolean {
    return this.#problem === 'connecting' && !this.ready;
  }

  get problem(): string {
    return this.ready ? '' : this.#problem;
  }

  async exchange(params: ExchangeParams, entries: readonly OwnCounts[]): Promise<number[]> {
    const reply = await this.#client.ppExchange(...exchangeArguments(params, entries));
    if (!Array.isArray(reply) || reply.length !== entries.length * 3) throw new Error('the store answered the exchange in an unexpected form');
    return reply.map(Number);
  }

  async close(): Promise<void> {
    try {
      await this.#client.quit();
    } catch {
      this.#client.disconnect();
    }
  }
}

function describe(error: NodeJS.ErrnoException): string {
  const message = error.message.split('\n')[0] ?? String(error);
  return error.code !== undefined && !message.includes(error.code) ? `${message} (${error.code})` : message;
}
