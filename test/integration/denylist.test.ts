/**
 * The denylist end to end (issue 11): before the allowlist (an address in both is refused),
 * IPv4-mapped clients of a dual-stack listener matched as IPv4 in both lists, UDP, the metrics and
 * log lines of a denial, and a live change.
 */
import test from 'ava';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon } from '../helpers/daemon.js';
import { denyLines, waitForDeny } from '../helpers/log-lines.js';
import { MAIN_FILE_WITH_METRICS, waitForSample } from '../helpers/metrics.js';
import { startCountingEchoServer } from '../helpers/servers.js';
import { slots } from '../helpers/slots.js';
import { attempt } from '../helpers/tcp-clients.js';
import { startUdpBackend, udpClient } from '../helpers/udp.js';
import { waitFor } from '../helpers/wait-for.js';

const slot = slots(2);

function file(target: string, lists: string, listen = '127.0.0.1:0', protocol = 'tcp'): string {
  return `protocol: ${protocol}\nlisten_address: "${listen}"\ntarget_address: "${target}"\n${lists}`;
}

test('the denylist wins over the allowlist; a denied client never reaches the target and is logged as denylist', async (t) => {
  await slot(t);
  const echo = await startCountingEchoServer(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': MAIN_FILE_WITH_METRICS,
    'conf.d/web.yaml': file(`127.0.0.1:${echo.port}`, 'allowlist: ["127.0.0.0/8"]\ndenylist: ["127.0.0.3", "127.0.0.128/25"]\n'),
  });
  const port = await daemon.port('web');
  t.is(await attempt(t, port, { localAddress: '127.0.0.3' }), null);
  t.is(await attempt(t, port, { localAddress: '127.0.0.200' }), null);
  t.not(await attempt(t, port, { localAddress: '127.0.0.2' }), null, 'allowed and not denied');
  const line = await waitForDeny(daemon, 'web', 'denylist', '127.0.0.3');
  t.regex(line, /\] Connection denied: listener=web protocol=tcp src=127\.0\.0\.3:\d+ reason=denylist action=deny$/);
  await waitForDeny(daemon, 'web', 'denylist', '127.0.0.200');
  t.is(echo.accepted(), 1, 'only the allowed client reached the target');
  t.is(await waitForSample(daemon, 'packetpony_acl_drops_total', { listener: 'web' }, 2), 2);
  t.is(await waitForSample(daemon, 'packetpony_connections_total', { listener: 'web', status: 'acl_denied' }, 2), 2);
});

test('dual stack: IPv4 clients are matched as IPv4 in both lists, whichever way an entry is written', async (t) => {
  await slot(t);
  const echo = await startCountingEchoServer(t);
  const daemon = await startDaemon(t, {
    // The listener sees ::ffff:127.0.0.x for IPv4 clients.
    'conf.d/dual.yaml': file(`127.0.0.1:${echo.port}`, 'allowlist: ["127.0.0.0/8", "::1"]\ndenylist: ["127.0.0.2", "::ffff:127.0.0.4"]\n', ':0'),
    // ::/0 denies every IPv6 client and no IPv4 one.
    'conf.d/v6deny.yaml': file(`127.0.0.1:${echo.port}`, 'allowlist: ["0.0.0.0/0", "::/0"]\ndenylist: ["::/0"]\n', ':0'),
  });
  const dual = await daemon.port('dual');
  const v6deny = await daemon.port('v6deny');
  t.is(await attempt(t, dual, { localAddress: '127.0.0.2' }), null);
  t.is(await attempt(t, dual, { localAddress: '127.0.0.4' }), null, 'a mapped entry is the IPv4 rule it names');
  t.not(await attempt(t, dual, { localAddress: '127.0.0.3' }), null);
  t.not(await attempt(t, dual, { host: '::1' }), null);
  t.regex(await waitForDeny(daemon, 'dual', 'denylist', '127.0.0.2'), /src=127\.0\.0\.2:\d+ reason=denylist/, 'logged in IPv4 form');
  await waitForDeny(daemon, 'dual', 'denylist', '127.0.0.4');

  t.not(await attempt(t, v6deny, { host: '127.0.0.1' }), null, 'an IPv4 client is not in ::/0');
  t.is(await attempt(t, v6deny, { host: '::1' }), null);
  t.regex(await waitForDeny(daemon, 'v6deny', 'denylist', '::1'), /src=\[::1\]:\d+ reason=denylist action=deny$/);
});

test('UDP: datagrams from a denied client are dropped and open no session', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t);
  const daemon = await startDaemon(t, {
    'conf.d/dns.yaml': file(`127.0.0.1:${backend.port}`, 'allowlist: ["127.0.0.0/8"]\ndenylist: ["127.0.0.9"]\n', '127.0.0.1:0', 'udp'),
  });
  const port = await daemon.port('dns');
  const denied = await udpClient(t, port, { localAddress: '127.0.0.9' });
  const allowed = await udpClient(t, port, { localAddress: '127.0.0.8' });
  for (let i = 0; i < 3; i++) denied.send(`denied ${i}`);
  t.is((await allowed.request('allowed')).toString(), 'allowed');
  await waitForDeny(daemon, 'dns', 'denylist', '127.0.0.9');
  t.deepEqual(backend.received.map((d) => d.data.toString()), ['allowed']);
  t.is(denied.replies.length, 0);
  t.false(daemon.lines.some((l) => /Connection opened: .*src=127\.0\.0\.9:/.test(l)));
});

test('live reload: an address added to the denylist is refused from then on', async (t) => {
  await slot(t);
  const echo = await startCountingEchoServer(t);
  const daemon = await startDaemon(t, { 'conf.d/web.yaml': file(`127.0.0.1:${echo.port}`, 'allowlist: ["127.0.0.0/8"]\n') });
  const port = await daemon.port('web');
  t.not(await attempt(t, port, { localAddress: '127.0.0.5' }), null);
  const from = daemon.lines.length;
  writeFileSync(join(daemon.dir, 'conf.d/web.yaml'), file(`127.0.0.1:${echo.port}`, 'allowlist: ["127.0.0.0/8"]\ndenylist: ["127.0.0.5"]\n'));
  await daemon.waitForLine(/listener web reconfigured/, 15_000, from);
  t.is(await attempt(t, port, { localAddress: '127.0.0.5' }), null);
  t.not(await attempt(t, port, { localAddress: '127.0.0.6' }), null);
  await waitFor(() => denyLines(daemon, 'web', 'denylist', '127.0.0.5').length === 1, 'the denial logged');
  t.pass();
});
