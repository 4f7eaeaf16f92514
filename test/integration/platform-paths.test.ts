/**
 * The start-up report of src/platform's probes: one line saying how each protocol in use is
 * relayed and how its sockets are owned, and each listener's "up" line naming its paths; on the
 * public path (PACKETPONY_PUBLIC_PATH=1) the same daemon relays TCP and UDP all the same.
 */
import test from 'ava';
import { startDaemon } from '../helpers/daemon.js';
import { connect, readAll, startEchoServer } from '../helpers/servers.js';
import { startUdpBackend, udpClient } from '../helpers/udp.js';

const files = (tcpTarget: number, udpTarget: number): Record<string, string> => ({
  'conf.d/web.yaml': `protocol: tcp\nlisten_address: "127.0.0.1:0"\ntarget_address: "127.0.0.1:${tcpTarget}"\nallowlist: ["127.0.0.0/8"]\n`,
  'conf.d/dns.yaml': `protocol: udp\nlisten_address: "127.0.0.1:0"\ntarget_address: "127.0.0.1:${udpTarget}"\nallowlist: ["127.0.0.0/8"]\n`,
});

async function relaysBoth(t: Parameters<typeof startEchoServer>[0], env: Record<string, string>) {
  const echo = await startEchoServer(t);
  const backend = await startUdpBackend(t);
  const daemon = await startDaemon(t, files(echo, backend.port), [], env);
  const socket = await connect(await daemon.port('web'));
  const back = readAll(socket);
  socket.end('through tcp');
  t.is((await back).toString(), 'through tcp');
  const client = await udpClient(t, await daemon.port('dns'));
  t.is((await client.request('through udp')).toString(), 'through udp');
  return daemon;
}

test('the default paths: said once at start, and on each listener\'s up line', async (t) => {
  const daemon = await relaysBoth(t, { PACKETPONY_PUBLIC_PATH: '' });
  const summary = await daemon.waitForLine(/\[INFO\] Node\.js v\d+\.\d+\.\d+: TCP relays /);
  t.regex(summary, /TCP relays on node's native TCP handles, sockets bound with net\._createServerHandle; UDP relays on dgram's native handles/);
  t.is(daemon.lines.filter((l) => l.includes(': TCP relays ')).length, 1, 'once, not per listener');
  t.regex(await daemon.waitForLine(/listener web up /), / relay=native-handles socket=node-helper$/);
  t.regex(await daemon.waitForLine(/listener dns up /), / relay=dgram-handles socket=(node-helper|addon-descriptor)$/);
  t.false(daemon.lines.some((l) => l.includes('[WARNING]')), daemon.lines.join('\n'));
});

test('PACKETPONY_PUBLIC_PATH=1: public APIs for TCP and UDP, sockets from the addon, said without a warning', async (t) => {
  const daemon = await relaysBoth(t, { PACKETPONY_PUBLIC_PATH: '1' });
  const summary = await daemon.waitForLine(/: TCP relays /);
  t.regex(summary, /TCP relays over net\.Socket \(public API\), sockets bound by the addon and inherited by the children/);
  t.regex(summary, /UDP relays over dgram \(public API\)/);
  t.regex(summary, /PACKETPONY_PUBLIC_PATH=1: public APIs wherever there is a choice$/);
  t.regex(await daemon.waitForLine(/listener web up /), / relay=net\.Socket socket=addon-descriptor$/);
  t.regex(await daemon.waitForLine(/listener dns up /), / relay=dgram socket=addon-descriptor$/);
  t.false(daemon.lines.some((l) => l.includes('[WARNING]')), daemon.lines.join('\n'));
});
