import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { UnixDatagramSource } from '../../../src/native/unix-dgram.js';
import { notifyUnavailable, reloadingMessage, sdNotify } from '../../../src/supervisor/sd-notify.js';
import { unixReceiver } from '../../helpers/unix-receiver.js';

function tempDir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'pp-notify-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A stand-in for systemd's notify socket at a path in a temp folder, or at `path` ('@name': an
 * abstract socket): collects what arrives.
 */
function notifySocket(t: ExecutionContext, path = join(tempDir(t), 'notify')): { path: string; next(): Promise<string> } {
  const queue: string[] = [];
  const waiting: Array<(message: string) => void> = [];
  unixReceiver(t, path, (message) => {
    const text = message.toString('utf8');
    const waiter = waiting.shift();
    if (waiter) waiter(text);
    else queue.push(text);
  });
  return {
    path,
    next: () => {
      const ready = queue.shift();
      if (ready !== undefined) return Promise.resolve(ready);
      return new Promise((resolve) => waiting.push(resolve));
    },
  };
}

test('sends each state as one datagram to the socket', async (t) => {
  const systemd = notifySocket(t);
  t.true(sdNotify('READY=1', systemd.path));
  t.is(await systemd.next(), 'READY=1');
  t.true(sdNotify('STATUS=2 listeners up\nREADY=1', systemd.path));
  t.is(await systemd.next(), 'STATUS=2 listeners up\nREADY=1');
  t.true(sdNotify('STOPPING=1', systemd.path));
  t.is(await systemd.next(), 'STOPPING=1');
});

/** Sets NOTIFY_SOCKET for one (serial) test; the runner itself may be a systemd service. */
function withNotifySocket(t: ExecutionContext, value: string | undefined): void {
  const saved = process.env.NOTIFY_SOCKET;
  if (value === undefined) delete process.env.NOTIFY_SOCKET;
  else process.env.NOTIFY_SOCKET = value;
  t.teardown(() => {
    if (saved === undefined) delete process.env.NOTIFY_SOCKET;
    else process.env.NOTIFY_SOCKET = saved;
  });
}

test.serial('reads NOTIFY_SOCKET when no path is given', async (t) => {
  const systemd = notifySocket(t);
  withNotifySocket(t, systemd.path);
  t.true(sdNotify('READY=1'));
  t.is(await systemd.next(), 'READY=1');
});

test.serial('does nothing without NOTIFY_SOCKET, and says so', (t) => {
  withNotifySocket(t, undefined);
  t.false(sdNotify('READY=1'));
  t.false(sdNotify('READY=1', ''));
});

test('never throws when the socket cannot be used', (t) => {
  const dir = tempDir(t);
  const notASocket = join(dir, 'file');
  writeFileSync(notASocket, '');
  t.false(sdNotify('READY=1', join(dir, 'missing')), 'no such socket');
  t.false(sdNotify('READY=1', notASocket), 'a regular file');
  t.false(sdNotify('READY=1', 'relative/notify'), 'relative path');
  t.false(sdNotify('READY=1', `@pp-test-nobody-${randomBytes(8).toString('hex')}`), 'no such abstract socket');
  t.false(sdNotify('READY=1', `/${'x'.repeat(120)}`), 'longer than sun_path');
  t.false(sdNotify('READY=1', `@${'x'.repeat(120)}`), 'a name longer than sun_path');
});

test('an abstract socket name (NOTIFY_SOCKET=@…) is reached, with no path on disk', async (t) => {
  // Abstract names are per network namespace, not per folder: a random one cannot collide.
  const systemd = notifySocket(t, `@pp-test-notify-${process.pid}-${randomBytes(8).toString('hex')}`);
  t.true(sdNotify('READY=1', systemd.path));
  t.is(await systemd.next(), 'READY=1');
});

test('without the native addon: nothing is sent, never a throw, and the warning says why', (t) => {
  const missing: UnixDatagramSource = { calls: () => null, missing: () => 'stand-in: not built' };
  const systemd = notifySocket(t);
  t.false(sdNotify('READY=1', systemd.path, missing));
  t.is(notifyUnavailable(systemd.path, missing), `NOTIFY_SOCKET is set (${systemd.path}) but the service manager cannot be notified: the native addon is not built (stand-in: not built); build it with npm run build (it needs a C compiler)`);
  t.is(notifyUnavailable(undefined, missing), '', 'no NOTIFY_SOCKET: nothing to warn about');
  t.is(notifyUnavailable(systemd.path), '', 'the addon is built here');
});

test('a reload announces itself with the monotonic clock in microseconds', (t) => {
  const before = process.hrtime.bigint() / 1000n;
  const match = /^RELOADING=1\nMONOTONIC_USEC=(\d+)$/.exec(reloadingMessage());
  t.truthy(match);
  const usec = BigInt(match![1]!);
  t.true(usec >= before && usec <= process.hrtime.bigint() / 1000n);
});
