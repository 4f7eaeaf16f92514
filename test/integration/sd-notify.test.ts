/** systemd's Type=notify protocol, spoken to a notify socket the test creates itself. */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon } from '../helpers/daemon.js';
import { startEchoServer } from '../helpers/servers.js';
import { unixReceiver } from '../helpers/unix-receiver.js';
import { waitFor } from '../helpers/wait-for.js';

test('READY=1 once listeners serve, RELOADING=1 then READY=1 around a reload, STOPPING=1 on stop', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pp-notify-'));
  const messages: string[] = [];
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  unixReceiver(t, join(dir, 'notify'), (message) => messages.push(message.toString()));

  const echo = await startEchoServer(t);
  const daemon = await startDaemon(
    t,
    { 'conf.d/web.yaml': `protocol: tcp\nlisten_address: "127.0.0.1:0"\ntarget_address: "127.0.0.1:${echo}"\nallowlist: ["127.0.0.1"]\n` },
    [],
    { NOTIFY_SOCKET: join(dir, 'notify') },
  );
  await waitFor(() => messages.find((m) => m.startsWith('READY=1')), 'READY=1');
  t.true(daemon.lines.some((l) => l.includes('listener web up')), 'ready only after the listener serves');
  t.regex(messages[0]!, /^READY=1\nSTATUS=1 of 1 listeners serving$/);

  process.kill(daemon.pid, 'SIGHUP');
  await waitFor(() => messages.length >= 3 || undefined, 'the reload notifications');
  t.regex(messages[1]!, /^RELOADING=1\nMONOTONIC_USEC=\d+$/);
  t.regex(messages[2]!, /^READY=1\n/);

  process.kill(daemon.pid, 'SIGTERM');
  await daemon.exited;
  t.is(messages[3], 'STOPPING=1');
});
