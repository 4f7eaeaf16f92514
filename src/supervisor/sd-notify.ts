/**
 * systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram per state change,
 * sent to the AF_UNIX socket named by $NOTIFY_SOCKET. The unit is `Type=notify` with
 * `NotifyAccess=main`, so only the supervisor (the main process) may call this; a child's messages
 * would be ignored by systemd.
 *
 * Node has no unix datagram sockets, hence the `unix-dgram` addon. It copies the path into
 * `sun_path` with strncpy and always passes the full address length, so it cannot reach an abstract
 * socket (`@name`): for those, and for paths too long for `sun_path`, sdNotify returns false.
 * systemd gives system and user services a path (/run/systemd/notify,
 * $XDG_RUNTIME_DIR/systemd/notify); abstract names come only from other managers.
 *
 * Notifying is best effort by design: a daemon must not stop serving because its service manager
 * cannot be told about it. So sdNotify never throws, and does nothing when NOTIFY_SOCKET is unset
 * (started by hand, or by a manager that does not speak the protocol).
 */
import { createRequire } from 'node:module';

/** The part of unix-dgram's API used here (the package ships no types). */
interface UnixDgramSocket {
  send(buf: Buffer, offset: number, length: number, path: string, callback: (error?: Error) => void): void;
  close(): void;
  on(event: 'error', listener: (error: Error) => void): unknown;
}

interface UnixDgramModule {
  createSocket(type: 'unix_dgram'): UnixDgramSocket;
}

/** sun_path holds 108 bytes with the terminating NUL; unix-dgram copies at most 107. */
const MAX_SOCKET_PATH_BYTES = 107;

let addon: UnixDgramModule | null | undefined;

/** Loaded on first use, so a missing or broken addon costs the notification, not the daemon. */
function loadAddon(): UnixDgramModule | null {
  if (addon === undefined) {
    try {
      addon = createRequire(import.meta.url)('unix-dgram') as UnixDgramModule;
    } catch {
      addon = null;
    }
  }
  return addon;
}

/**
 * Sends `state` (newline-separated assignments such as 'READY=1', 'STOPPING=1',
 * 'STATUS=2 listeners up') to the service manager. Returns true when the datagram was handed to
 * the socket; false when NOTIFY_SOCKET is unset or unusable, or sending failed.
 */
export function sdNotify(state: string, socketPath: string | undefined = process.env.NOTIFY_SOCKET): boolean {
  if (socketPath === undefined || socketPath === '') return false;
  if (!socketPath.startsWith('/') || Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES) return false;
  const dgram = loadAddon();
  if (dgram === null) return false;

  let socket: UnixDgramSocket;
  try {
    socket = dgram.createSocket('unix_dgram');
  } catch {
    return false;
  }
  socket.on('error', () => {}); // nothing may reach 'uncaughtException' from here
  const message = Buffer.from(state, 'utf8');
  let outcome: boolean | undefined;
  const close = (): void => {
    try {
      socket.close();
    } catch {
      // Already closed: nothing to give back.
    }
  };
  try {
    socket.send(message, 0, message.length, socketPath, (error) => {
      const deferred = outcome !== undefined;
      outcome = error === undefined || error === null;
      if (deferred) close();
    });
  } catch {
    close();
    return false;
  }
  // unix-dgram 2.x answers synchronously (sendmsg on a non-blocking socket). Should a later
  // version defer the callback, the datagram is under way: close once it is done.
  if (outcome === undefined) {
    outcome = true;
    return true;
  }
  close();
  return outcome;
}

/**
 * The message for the start of a reload: systemd (>= 253, Type=notify-reload) wants the monotonic
 * clock alongside RELOADING=1 to match it with the reload it asked for; older versions ignore it.
 * Send 'READY=1' when the reload is done, whatever its outcome.
 */
export function reloadingMessage(): string {
  // process.hrtime is CLOCK_MONOTONIC on Linux, the clock systemd means.
  return `RELOADING=1\nMONOTONIC_USEC=${process.hrtime.bigint() / 1000n}`;
}
