/**
 * TCP clients for policy tests: one that tells an admitted connection from a refused one, and one
 * that downloads and measures. Sources other than 127.0.0.1 come from `localAddress`.
 */
import net from 'node:net';
import type { ExecutionContext } from 'ava';
import { sha256 } from './servers.js';

export interface ClientOptions {
  /** The daemon's address; default 127.0.0.1. */
  readonly host?: string;
  /** Source address, e.g. 127.0.0.2 to be another client. */
  readonly localAddress?: string;
}

/**
 * Connects through the daemon to an echo backend and sends a probe. Resolves with the open socket
 * once the echo comes back (admitted; closed when the test ends), or null when the daemon closes or
 * resets the connection first (refused: the daemon accepts, then resets a refused client).
 */
export function attempt(t: ExecutionContext, port: number, options: ClientOptions = {}): Promise<net.Socket | null> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: options.host ?? '127.0.0.1', ...(options.localAddress ? { localAddress: options.localAddress } : {}), allowHalfOpen: true });
    t.teardown(() => void socket.destroy());
    const refused = (): void => {
      socket.destroy();
      resolve(null);
    };
    socket.once('connect', () => socket.write('probe'));
    socket.once('data', () => {
      socket.off('error', refused);
      socket.off('close', refused);
      socket.on('error', () => {});
      resolve(socket);
    });
    socket.once('error', refused);
    socket.once('close', refused);
  });
}

/** Ends an admitted connection and resolves when the daemon has closed it too. */
export function hangUp(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) {
      resolve();
      return;
    }
    socket.on('close', () => resolve());
    socket.resume();
    socket.end();
  });
}

export interface Download {
  readonly bytes: number;
  readonly sha256: string;
  /**
   * Whether the stream ended without an error. Not proof of a normal end: libuv reports a reset
   * that arrives right after data as EOF (POLLHUP after a partial read), so compare byte counts.
   */
  readonly complete: boolean;
  readonly error?: string;
  /** From connect to the end of the stream. */
  readonly elapsedMs: number;
}

/** Asks a startDownloadServer() backend, through the daemon, for `bytes` bytes under `id`. */
export function download(t: ExecutionContext, port: number, bytes: number, id: string, options: ClientOptions = {}): Promise<Download> {
  return new Promise((resolve) => {
    const started = performance.now();
    const chunks: Buffer[] = [];
    let received = 0;
    const socket = net.connect({ port, host: options.host ?? '127.0.0.1', ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    t.teardown(() => void socket.destroy());
    const finish = (complete: boolean, error?: string): void => {
      const data = Buffer.concat(chunks);
      resolve({ bytes: received, sha256: sha256(data), complete, elapsedMs: performance.now() - started, ...(error ? { error } : {}) });
    };
    socket.once('connect', () => socket.write(`${bytes} ${id}\n`));
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
    });
    socket.once('end', () => finish(true));
    socket.once('error', (err: NodeJS.ErrnoException) => finish(false, err.code ?? err.message));
    socket.once('close', () => finish(false, 'closed'));
  });
}
