/**
 * A unix datagram receiver bound at a path (or '@name', an abstract socket), standing in for
 * syslog's /dev/log and systemd's notify socket. Built on the same native calls the daemon sends
 * with (src/native/unix-dgram.ts): Node has no unix datagram sockets.
 */
import type { ExecutionContext } from 'ava';
import { UnixDatagramSocket, nativeUnixDatagrams } from '../../src/native/unix-dgram.js';

export interface UnixReceiver {
  readonly path: string;
  /** Stops receiving and frees the socket (also done at the test's end). */
  close(): void;
}

/** Binds at `path` and calls `onMessage` with each datagram; closed at the test's end. */
export function unixReceiver(t: ExecutionContext, path: string, onMessage: (message: Buffer) => void): UnixReceiver {
  const calls = nativeUnixDatagrams.calls();
  if (calls === null) throw new Error(`unix datagram receivers need the native addon: ${nativeUnixDatagrams.missing()}`);
  const socket = new UnixDatagramSocket(calls);
  const error = socket.bind(path);
  if (error !== null) {
    socket.close();
    throw new Error(`cannot bind a unix datagram socket at ${path}: ${error}`);
  }
  // 64 KiB: more than any datagram the daemon sends (syslog lines, sd_notify states).
  const buffer = Buffer.alloc(65_536);
  socket.onReadable(() => {
    for (;;) {
      const n = socket.receive(buffer);
      if (typeof n !== 'number') return; // null: nothing more waiting; a string: an error, none expected
      onMessage(Buffer.from(buffer.subarray(0, Math.min(n, buffer.length))));
    }
  });
  const close = (): void => socket.close();
  t.teardown(close);
  return { path, close };
}
