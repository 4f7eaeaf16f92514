/**
 * Backends that do not answer. A listener whose accept queue is full and that never accepts: the
 * kernel then drops every further SYN (tcp_conn_request: "accept queue full"), so a dial neither
 * connects nor is refused — the connect timeout is the only way out. The listener lives in a child
 * process whose event loop is blocked for good right after listen(), so nothing ever accepts; it is
 * killed by PID when the test ends.
 */
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import type { ExecutionContext } from 'ava';
import { waitFor } from '../../helpers/wait-for.js';

const NEVER_ACCEPTS = `
const net = require('node:net');
const server = net.createServer();
server.listen({ port: 0, host: process.argv[1], backlog: 1 }, () => {
  process.stdout.write(server.address().port + '\\n');
  // Block the event loop forever without burning CPU: nothing is ever accepted.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
});
`;

/** The accept queue of a listening socket: [queued, maximum] from ss (Recv-Q, Send-Q). */
function acceptQueue(port: number): [number, number] {
  const out = execFileSync('ss', ['-Hltn', `sport = :${port}`], { encoding: 'utf8' }).trim();
  const fields = out.split(/\s+/);
  return [Number(fields[1]), Number(fields[2])];
}

/**
 * A loopback port whose SYNs go unanswered. Returns the port; the filler connections and the
 * process are cleaned up when the test ends.
 */
export async function silentPort(t: ExecutionContext, host = '127.0.0.1'): Promise<number> {
  const child = spawn(process.execPath, ['-e', NEVER_ACCEPTS, host], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const port = await waitFor(() => (out.includes('\n') ? Number(out.trim()) : undefined), 'the silent listener to print its port');
  // Fill the accept queue: once it holds more than its maximum, the kernel drops new SYNs.
  const fillers: net.Socket[] = [];
  t.teardown(() => {
    for (const socket of fillers) socket.destroy();
  });
  for (let i = 0; i < 16; i++) {
    const [queued, max] = acceptQueue(port);
    if (queued > max) return port;
    const socket = net.connect({ port, host });
    socket.on('error', () => {});
    fillers.push(socket);
    const before = queued;
    await waitFor(() => acceptQueue(port)[0] > before || socket.pending === false || undefined, 'a filler connection to be queued', 2000).catch(() => undefined);
  }
  const [queued, max] = acceptQueue(port);
  if (queued <= max) throw new Error(`could not fill the accept queue of port ${port} (${queued}/${max})`);
  return port;
}

/** A name that never resolves (RFC 2606 reserves .invalid). */
export const UNRESOLVABLE = 'packetpony-reliability.invalid';
