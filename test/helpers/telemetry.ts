/**
 * Helpers for the telemetry integration tests: receivers for each log sink, a UDP echo backend and
 * a Prometheus scrape parser. Everything listens on loopback or in a temp folder and is closed when
 * the test ends.
 */
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import type { Daemon } from './daemon.js';
import { unixReceiver as bindUnixReceiver } from './unix-receiver.js';

export function tempDir(t: ExecutionContext, prefix = 'pp-tel-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A main file: stdout text always (the daemon helper reads it), plus what the test adds. */
export function mainFile(extra: { logging?: string; metrics?: boolean } = {}): string {
  let text = 'logging:\n  stdout:\n    enabled: true\n';
  if (extra.logging) text += extra.logging.replace(/^/gm, '  ') + '\n';
  if (extra.metrics !== false) text += 'metrics:\n  prometheus:\n    enabled: true\n    listen_address: "127.0.0.1:0"\n';
  return text;
}

export function tcpListener(target: string, extra = '', allow = '["127.0.0.0/8"]'): string {
  return `protocol: tcp\nlisten_address: "127.0.0.1:0"\ntarget_address: "${target}"\nallowlist: ${allow}\n${extra}`;
}

export function udpListener(target: string, extra = ''): string {
  return `protocol: udp\nlisten_address: "127.0.0.1:0"\ntarget_address: "${target}"\nallowlist: ["127.0.0.0/8"]\n${extra}`;
}

/** The metrics server's port, from its "metrics server started" line. */
export async function metricsPort(daemon: Daemon): Promise<number> {
  const line = await daemon.waitForLine(/metrics server started address=\S+:\d+/);
  return Number(/address=\S+:(\d+)/.exec(line)![1]);
}

/** One scrape as a map from `name{labels}` to value. */
export async function scrape(port: number): Promise<Map<string, number>> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  const out = new Map<string, number>();
  for (const line of (await response.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

/** The raw exposition text. */
export async function scrapeText(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

/** Echoes every datagram back to its sender. */
export async function udpEcho(t: ExecutionContext): Promise<number> {
  const socket = dgram.createSocket('udp4');
  socket.on('message', (msg, from) => socket.send(msg, from.port, from.address));
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  t.teardown(() => socket.close());
  return socket.address().port;
}

export interface Receiver {
  readonly port: number;
  /** Every message received, in order (for tcp: one per newline-terminated line). */
  readonly messages: string[];
  /** Stops listening and drops the connections. */
  stop(): Promise<void>;
}

export async function syslogUdpReceiver(t: ExecutionContext): Promise<Receiver> {
  const socket = dgram.createSocket('udp4');
  const messages: string[] = [];
  socket.on('message', (msg) => messages.push(msg.toString().replace(/\n$/, '')));
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  let open = true;
  const stop = async (): Promise<void> => {
    if (!open) return;
    open = false;
    await new Promise<void>((resolve) => socket.close(() => resolve()));
  };
  t.teardown(stop);
  return { port: socket.address().port, messages, stop };
}

export async function syslogTcpReceiver(t: ExecutionContext): Promise<Receiver> {
  const messages: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let partial = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop()!;
      messages.push(...parts);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  let open = true;
  const stop = (): Promise<void> => {
    if (!open) return Promise.resolve();
    open = false;
    return new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });
  };
  t.teardown(stop);
  return { port: (server.address() as net.AddressInfo).port, messages, stop };
}

/** A datagram socket at `<temp folder>/log`, standing in for /dev/log. */
export function unixReceiver(t: ExecutionContext): { path: string; messages: string[] } {
  const path = join(tempDir(t, 'pp-devlog-'), 'log');
  const messages: string[] = [];
  bindUnixReceiver(t, path, (buffer) => messages.push(buffer.toString()));
  return { path, messages };
}

/**
 * Sends `datagrams` to `port` from one socket, at most `window` without a reply yet, and resolves
 * with the replies once every datagram has had one (loopback loses nothing at that pace).
 */
export async function udpExchange(t: ExecutionContext, port: number, datagrams: readonly Buffer[], window = 1): Promise<Buffer[]> {
  const socket = dgram.createSocket('udp4');
  t.teardown(() => socket.close());
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const replies: Buffer[] = [];
  let sent = 0;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${replies.length} of ${datagrams.length} replies after 60 s`)), 60_000);
    const pump = (): void => {
      while (sent < datagrams.length && sent - replies.length < window) socket.send(datagrams[sent++]!, port, '127.0.0.1');
    };
    socket.on('message', (msg) => {
      replies.push(msg);
      if (replies.length === datagrams.length) {
        clearTimeout(timer);
        resolve();
      } else pump();
    });
    pump();
  });
  return replies;
}
