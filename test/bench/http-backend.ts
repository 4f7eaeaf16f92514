/**
 * The HTTP backend used when nginx is not installed: a tiny Node server answering every request with
 * a short fixed body. node http-backend.js PORT; prints "ready PORT". Loopback only.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

const body = Buffer.from('hello from the packetpony benchmark\n');
const server = http.createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  process.stdout.write(`ready ${(server.address() as AddressInfo).port}\n`);
});
