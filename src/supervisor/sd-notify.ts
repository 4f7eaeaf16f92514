/**
 * systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram per state change,
 * sent to the AF_UNIX socket named by $NOTIFY_SOCKET. The unit is `Type=notify` with
 * `NotifyAccess=main`, so only the supervisor (the main process) may call this; a child's messages
 * would be ignored by systemd.
 *
 * Node has no unix datagram sockets: they come from our native addon (src/native/unix-dgram.ts),
 * looked for only once NOTIFY_SOCKET is set. A path or, with a leading '@', a Linux abstract
 * socket name (systemd gives services paths, /run/systemd/notify; other managers may give names).
 *
 * Notifying is best effort by design: a daemon must not stop serving because its service manager
 * cannot be told about it. So sdNotify never throws, and does nothing when NOTIFY_SOCKET is unset
 * (started by hand, or by a manager that does not speak the protocol). When the addon is missing
 * nothing is sent; notifyUnavailable() gives the warning to log once at start.
 */
import { UnixDatagramSocket, nativeUnixDatagrams, type UnixDatagramSource } from '../native/unix-dgram.js';

/**
 * Why NOTIFY_SOCKET is set but nothing can be sent to it (the addon is not there), or '' when
 * notifying works or is not asked for. For a warning at start: under Type=notify, systemd waits
 * for READY=1 until its start timeout.
 */
export function notifyUnavailable(socketPath: string | undefined = process.env.NOTIFY_SOCKET, source: UnixDatagramSource = nativeUnixDatagrams): string {
  if (socketPath === undefined || socketPath === '' || source.calls() !== null) return '';
  return `NOTIFY_SOCKET is set (${socketPath}) but the service manager cannot be notified: the native addon is not built (${source.missing()}); build it with npm run build (it needs a C compiler)`;
}

/**
 * Sends `state` (newline-separated assignments such as 'READY=1', 'STOPPING=1',
 * 'STATUS=2 listeners up') to the service manager. Returns true when the datagram was handed to
 * the socket; false when NOTIFY_SOCKET is unset or unusable, the addon is missing, or sending
 * failed.
 */
export function sdNotify(
  state: string,
  socketPath: string | undefined = process.env.NOTIFY_SOCKET,
  source: UnixDatagramSource = nativeUnixDatagrams,
): boolean {
  if (socketPath === undefined || socketPath === '') return false;
  // A relative path would depend on the daemon's working folder: systemd never gives one.
  if (!socketPath.startsWith('/') && !socketPath.startsWith('@')) return false;
  const calls = source.calls();
  if (calls === null) return false;
  let socket: UnixDatagramSocket;
  try {
    socket = new UnixDatagramSocket(calls);
  } catch {
    return false; // out of descriptors, say
  }
  // Too long for sun_path, no such socket, no reader, a full queue: all just "not sent".
  const error = socket.send(Buffer.from(state, 'utf8'), socketPath);
  socket.close();
  return error === null;
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
