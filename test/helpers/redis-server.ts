/**
 * A redis-server of the test's own on a free loopback port (shared limits, issue 24): no disk, no
 * config file, stopped by PID when the test ends. It can be killed and started again on the same
 * port (a store that goes away and comes back), or paused with SIGSTOP (one that stops answering).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import type { ExecutionContext } from 'ava';
import { Redis } from 'ioredis';
import { waitFor } from './wait-for.js';

export interface RedisServer {
  readonly port: number;
  readonly url: string;
  /** The PID of the server now running (it changes with restart()). */
  readonly pid: number;
  /** A client of the test's own (for reading what the daemons wrote). */
  readonly client: Redis;
  /** SIGKILL: the store is gone, with everything it held. */
  kill(): Promise<void>;
  /** A fresh, empty server on the same port. */
  restart(): Promise<void>;
  pause(): void;
  resume(): void;
  /** The hash of one address under `base` (key_prefix:listener): host → its counts as last written. */
  counts(base: string, address: string): Promise<Record<string, HostCounts>>;
}

/** One host's counts of one address in the store, and the store's time (ms) of that write. */
export interface HostCounts {
  readonly attempts: number;
  readonly bytes: number;
  readonly open: number;
  readonly at: number;
}

const started = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of started) child.kill('SIGKILL');
});

/** Whether redis-server is installed (`.ci/run` installs it when it is not). */
export function haveRedisServer(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let reply = '';
    socket.setEncoding('utf8');
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk: string) => {
      reply += chunk;
      if (reply.includes('\r\n')) {
        socket.destroy();
        resolve(reply.startsWith('+PONG'));
      }
    });
    socket.once('error', () => resolve(false));
  });
}

export async function startRedisServer(t: ExecutionContext): Promise<RedisServer> {
  if (!haveRedisServer()) throw new Error('redis-server is not installed: apt-get install redis-server (.ci/run does so)');
  const port = await freePort();
  let child: ChildProcess;
  let exited: Promise<void>;
  const launch = async (): Promise<void> => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    started.add(child);
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    exited = new Promise((resolve) => child.once('exit', () => resolve()));
    void exited.then(() => started.delete(child));
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`redis-server exited (${child.exitCode}): ${stderr}`);
      return answersPing(port);
    }, `redis-server on 127.0.0.1:${port}`);
  };
  const kill = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGKILL');
    await exited;
  };
  await launch();
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 100 });
  client.on('error', () => {});
  t.teardown(async () => {
    client.disconnect();
    await kill();
  });
  return {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    get pid() {
      return child.pid!;
    },
    client,
    kill,
    restart: async () => {
      await kill();
      await launch();
    },
    pause: () => child.kill('SIGSTOP'),
    resume: () => child.kill('SIGCONT'),
    async counts(base, address) {
      if (client.status === 'wait') await client.connect();
      const fields = await client.hgetall(`${base}:addr:${address}`);
      const out: Record<string, HostCounts> = {};
      for (const [host, value] of Object.entries(fields)) {
        const [, attempts, bytes, open, at] = value.split(' ').map(Number);
        out[host] = { attempts: attempts!, bytes: bytes!, open: open!, at: at! };
      }
      return out;
    },
  };
}
