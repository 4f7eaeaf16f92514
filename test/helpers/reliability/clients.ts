/** TCP clients that time how a connection ends. */
import net from 'node:net';
import type { ExecutionContext } from 'ava';

export interface Ending {
  /** performance.now() at connect() and when the connection was seen to end. */
  readonly startedAt: number;
  readonly endedAt: number;
  /** 'ECONNRESET', 'end' (FIN), 'close' … */
  readonly how: string;
}

/** Connects and resolves when the proxy ends the connection (reset or FIN), with timings. */
export function timeToClose(t: ExecutionContext, port: number, options: { host?: string; localAddress?: string; send?: string | Buffer } = {}): Promise<Ending> {
  return new Promise((resolve) => {
    const startedAt = performance.now();
    const socket = net.connect({ port, host: options.host ?? '127.0.0.1', ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    t.teardown(() => void socket.destroy());
    let done = false;
    const finish = (how: string): void => {
      if (done) return;
      done = true;
      resolve({ startedAt, endedAt: performance.now(), how });
      socket.destroy();
    };
    if (options.send !== undefined) socket.once('connect', () => socket.write(options.send!));
    socket.on('data', () => {});
    socket.once('end', () => finish('end'));
    socket.once('error', (error: NodeJS.ErrnoException) => finish(error.code ?? error.message));
    socket.once('close', () => finish('close'));
  });
}

export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
}

export function summary(values: readonly number[], digits = 0): string {
  if (values.length === 0) return 'n=0';
  return `n=${values.length} min=${Math.min(...values).toFixed(digits)} p50=${percentile(values, 50).toFixed(digits)} p99=${percentile(values, 99).toFixed(digits)} max=${Math.max(...values).toFixed(digits)}`;
}
