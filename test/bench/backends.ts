/**
 * The backends the rows talk to, all on the load core: an iperf3 server, an HTTP server (nginx when
 * installed, else a tiny Node server), the C UDP echo, and an in-process TCP server that answers
 * "pong" and then holds its connections (for the idle-memory row).
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { freePort, tcpListening } from './net-util.js';
import { start, stop, waitFor, type Cores, type Started } from './procs.js';
import type { BackendKind } from './rows.js';
import type { Tools } from './tools.js';

export interface Backend {
  readonly port: number;
  readonly label: string;
  stop(): Promise<void>;
}

export interface BackendContext {
  readonly root: string;
  readonly work: string;
  readonly tools: Tools;
  readonly loadCore: Cores;
  /** Worker processes of the nginx HTTP backend (default 1; the two-core rows: 2). */
  readonly threads?: number;
}

async function listening(p: Started, port: number, what: string): Promise<void> {
  await waitFor(() => {
    if (p.child.exitCode !== null) throw new Error(`${what} exited: ${p.err().slice(-500)}`);
    return tcpListening(port) || undefined;
  }, `${what} on ${port}`);
}

export async function iperfServer(ctx: BackendContext): Promise<Backend> {
  const port = await freePort();
  const p = start('iperf3-server', ctx.tools.iperf3!, ['-s', '-p', String(port), '-B', '127.0.0.1'], { core: ctx.loadCore });
  await listening(p, port, 'iperf3 -s');
  return { port, label: 'iperf3 -s', stop: () => stop(p) };
}

export async function httpServer(ctx: BackendContext): Promise<Backend> {
  const port = await freePort();
  const workers = ctx.threads ?? 1;
  if (ctx.tools.nginx !== null) {
    const dir = join(ctx.work, `http-backend-${process.pid}`);
    mkdirSync(dir, { recursive: true });
    const conf = join(dir, 'nginx.conf');
    writeFileSync(conf, [
      'daemon off;', 'user root;', `worker_processes ${workers};`, 'worker_rlimit_nofile 65536;',
      `pid ${dir}/nginx.pid;`, `error_log ${dir}/error.log error;`,
      'events { worker_connections 20000; }',
      'http {',
      '  access_log off;',
      `  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi;`,
      `  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;`,
      '  keepalive_requests 10000000; keepalive_timeout 120s;',
      `  server { listen 127.0.0.1:${port} backlog=4096${workers > 1 ? ' reuseport' : ''}; location / { default_type text/plain; return 200 "hello from the packetpony benchmark\\n"; } }`,
      '}', '',
    ].join('\n'));
    const p = start('nginx-http', ctx.tools.nginx, ['-p', dir, '-c', conf, '-e', join(dir, 'error.log')], { core: ctx.loadCore });
    await listening(p, port, 'nginx (HTTP backend)');
    return {
      port,
      label: `nginx (${workers} worker${workers > 1 ? 's' : ''})`,
      async stop() {
        await stop(p);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const p = start('http-backend', process.execPath, [join(ctx.root, 'dist/test/bench/http-backend.js'), String(port)], { core: ctx.loadCore });
  await listening(p, port, 'node HTTP backend');
  return { port, label: 'Node http', stop: () => stop(p) };
}

export async function udpEcho(ctx: BackendContext): Promise<Backend> {
  const p = start('udp-echo', ctx.tools.udpEcho!, ['0'], { core: ctx.loadCore });
  const port = await waitFor(() => {
    if (p.child.exitCode !== null) throw new Error(`udp-echo exited: ${p.err()}`);
    const m = /ready (\d+)/.exec(p.out());
    return m ? Number(m[1]) : undefined;
  }, 'udp-echo');
  return { port, label: 'C echo (recvmmsg)', stop: () => stop(p) };
}

/** In this process (pinned to the load core): answers the first bytes with "pong", then holds. */
export interface HoldServer extends Backend {
  readonly accepted: () => number;
  closeAll(): void;
}

export async function holdServer(): Promise<HoldServer> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = net.createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    socket.once('data', () => socket.write('pong'));
  });
  server.maxConnections = 100_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', 4096, resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    label: 'in-process hold server',
    accepted: () => accepted,
    closeAll() {
      for (const s of sockets) s.destroy();
    },
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

export async function startBackend(kind: BackendKind, ctx: BackendContext): Promise<Backend> {
  switch (kind) {
    case 'iperf': return iperfServer(ctx);
    case 'http': return httpServer(ctx);
    case 'udp': return udpEcho(ctx);
    case 'hold': return holdServer();
  }
}
