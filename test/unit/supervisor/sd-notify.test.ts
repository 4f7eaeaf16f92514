import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { reloadingMessage, sdNotify } from '../../../src/supervisor/sd-notify.js';

interface Receiver {
  bind(path: string): void;
  close(): void;
  on(event: 'message', listener: (message: Buffer) => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  on(event: 'listening', listener: () => void): unknown;
}

const unixDgram = createRequire(import.meta.url)('unix-dgram') as { createSocket(type: 'unix_dgram'): Receiver };

function tempDir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'pp-notify-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A stand-in for systemd's notify socket: collects what arrives. */
async function notifySocket(t: ExecutionContext): Promise<{ path: string; next(): Promise<string> }> {
  const path = join(tempDir(t), 'notify');
  const socket = unixDgram.createSocket('unix_dgram');
  const queue: string[] = [];
  const waiting: Array<(message: string) => void> = [];
  socket.on('message', (message) => {
    const text = message.toString('utf8');
    const waiter = waiting.shift();
    if (waiter) waiter(text);
    else queue.push(text);
  });
  await new Promise<void>((resolve, reject) => {
    socket.on('listening', resolve);
    socket.on('error', reject);
    socket.bind(path);
  });
  t.teardown(() => socket.close());
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
  const systemd = await notifySocket(t);
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
  const systemd = await notifySocket(t);
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
  t.false(sdNotify('READY=1', '@/org/freedesktop/systemd1/notify'), 'abstract socket: not supported by unix-dgram');
  t.false(sdNotify('READY=1', `/${'x'.repeat(120)}`), 'longer than sun_path');
});

test('a reload announces itself with the monotonic clock in microseconds', (t) => {
  const before = process.hrtime.bigint() / 1000n;
  const match = /^RELOADING=1\nMONOTONIC_USEC=(\d+)$/.exec(reloadingMessage());
  t.truthy(match);
  const usec = BigInt(match![1]!);
  t.true(usec >= before && usec <= process.hrtime.bigint() / 1000n);
});
