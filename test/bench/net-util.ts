/** Small loopback helpers: free ports and "is someone listening on this port". */
import { readFileSync } from 'node:fs';
import dgram from 'node:dgram';
import net from 'node:net';

/** A port the kernel just handed out on 127.0.0.1 (free for TCP and UDP alike at that moment). */
export async function freePort(): Promise<number> {
  for (let tries = 0; tries < 20; tries++) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = net.createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const { port } = server.address() as net.AddressInfo;
        server.close(() => resolve(port));
      });
    });
    const udpFree = await new Promise<boolean>((resolve) => {
      const socket = dgram.createSocket('udp4');
      socket.once('error', () => resolve(false));
      socket.bind(port, '127.0.0.1', () => socket.close(() => resolve(true)));
    });
    if (udpFree) return port;
  }
  throw new Error('no free port found');
}

/** Whether a TCP socket listens on 127.0.0.1:port or any address:port (from /proc/net/tcp). */
export function tcpListening(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      const fields = line.trim().split(/\s+/);
      if (fields[3] === '0A' && fields[1]?.endsWith(`:${hex}`)) return true;
    }
  }
  return false;
}

/** Whether a UDP socket is bound to port (from /proc/net/udp). */
export function udpBound(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const file of ['/proc/net/udp', '/proc/net/udp6']) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    if (text.split('\n').some((line) => line.trim().split(/\s+/)[1]?.endsWith(`:${hex}`))) return true;
  }
  return false;
}
