/**
 * The "bare Node relay" target: what a Node forwarder looks like with no feature at all — TCP with
 * net + pipe(), UDP with dgram and a session Map keyed by "address:port". The naive-Node floor the
 * product is compared with. Run as its own process: node node-relay.js tcp|udp LISTEN_PORT TARGET_PORT
 * (LISTEN_PORT 0: any); prints "ready PORT" once listening. Loopback only.
 */
import dgram from 'node:dgram';
import net from 'node:net';

const [protocol, listenArg, targetArg] = process.argv.slice(2);
const listenPort = Number(listenArg);
const targetPort = Number(targetArg);
const HOST = '127.0.0.1';

if (protocol === 'tcp') {
  const server = net.createServer((client) => {
    const target = net.connect(targetPort, HOST);
    const end = (): void => {
      client.destroy();
      target.destroy();
    };
    client.on('error', end);
    target.on('error', end);
    client.pipe(target);
    target.pipe(client);
  });
  server.listen(listenPort, HOST, () => {
    process.stdout.write(`ready ${(server.address() as net.AddressInfo).port}\n`);
  });
} else {
  const socket = dgram.createSocket('udp4');
  const sessions = new Map<string, dgram.Socket>();
  socket.on('message', (msg, rinfo) => {
    const key = `${rinfo.address}:${rinfo.port}`;
    let upstream = sessions.get(key);
    if (upstream === undefined) {
      const session = dgram.createSocket('udp4');
      session.on('message', (reply) => socket.send(reply, rinfo.port, rinfo.address));
      session.on('error', () => {});
      session.connect(targetPort, HOST);
      sessions.set(key, session);
      upstream = session;
      // Sent once connected: until then a connected-only send would throw.
      session.once('connect', () => session.send(msg));
      return;
    }
    upstream.send(msg);
  });
  socket.bind(listenPort, HOST, () => {
    process.stdout.write(`ready ${socket.address().port}\n`);
  });
}
