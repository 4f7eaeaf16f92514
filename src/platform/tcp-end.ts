/**
 * What the TCP relay needs from each end of a connection, and from the way this process makes
 * ends: the contract between the relay (src/proxy) and the two implementations, kept here so that
 * this folder imports nothing of the relay's. One implementation per process
 * (src/proxy/tcp-path.ts picks it at start):
 * - native-tcp-path.ts (the ends in native-tcp-end.ts): Node's native TCP handles with no
 *   net.Socket around them, and our addon's batched reads and direct sends (the fast path;
 *   native-tcp-end.ts says why);
 * - src/proxy/socket-end.ts: net.Socket, public APIs only (where the internals are missing or denied, or with
 *   PACKETPONY_PUBLIC_PATH=1): the same behaviour, slower.
 *
 * The contract, as the relay (tcp-relay.ts, relay-flow.ts) and the PROXY header reader rely on it:
 * - Reads go to a ReadSink: it gives the buffer the next read lands in (`nextBuffer`, asked first
 *   and after each read; null keeps the current one), and is told how many bytes landed at its
 *   start (`onStaticRead`), answering whether to keep reading. Nothing is read before
 *   startReading() or after stopReading(); an accepted end does not read until asked.
 * - Writes go through an EndWriter, one per relay direction: WRITE_DONE means the buffer may be
 *   reused at once; WRITE_PENDING means the writer holds it until its onComplete(status) call.
 * - end() sends our FIN after what was written; a half-open end closes itself once both its end of
 *   stream was read and its FIN was sent. reset() closes with a RST; close() plainly. Errors come
 *   through onError with `code`, `errno`, `syscall` and net.Socket's messages, and never close the
 *   end by themselves in a way the owner can tell: onClose comes once, after close(), reset(), an
 *   error or a clean end of both halves.
 */
import type net from 'node:net';
import { getSystemErrorName } from 'node:util';

/** Who reads an end: a relay direction, or the PROXY header reader before it. */
export interface ReadSink {
  /** `nread` (> 0) bytes landed at the start of the current buffer. Returns whether to keep reading. */
  onStaticRead(nread: number): boolean;
  /** Asked first and after each read: the buffer to read into next, or null to keep the current one. */
  nextBuffer(): Uint8Array | null;
}

export interface TcpEnd {
  /** Called once a dial completes. */
  onConnect: () => void;
  /** End of stream (the peer's FIN). */
  onEnd: () => void;
  /** A read, write, shutdown or connect error; the owner decides what follows. */
  onError: (err: NodeJS.ErrnoException) => void;
  /** The end is closed (once). */
  onClose: () => void;
  /** The peer's FIN was read. */
  readonly readableEnded: boolean;
  /** Our FIN was asked for. */
  readonly writableEnded: boolean;
  /** Our FIN was sent. */
  readonly writableFinished: boolean;
  /** close() or reset() was called, or the end closed itself. */
  readonly destroyed: boolean;
  /** The close came. */
  readonly closed: boolean;
  readonly reading: boolean;
  /** The socket's descriptor, -1 when closed or not known (public path). */
  readonly descriptor: number;
  /** Bytes written but not yet taken by the kernel; 0 once closed. */
  readonly pendingWriteBytes: number;
  /** The kernel's unacknowledged send queue, or -1 when it cannot be known. */
  unsentBytes(): number;
  remote(): { address: string; port: number; family: string } | null;
  local(): { address: string; port: number; family: string } | null;
  setNoDelay(): void;
  /** TCP keepalive, first probe after `ms` of silence. */
  setKeepAlive(ms: number): void;
  setSink(sink: ReadSink): void;
  /** Starts reading. Returns the error to fail with, or null. */
  startReading(): NodeJS.ErrnoException | null;
  stopReading(): void;
  /** Our FIN after what was written (idempotent); `nothingQueued`: no write of ours is pending. */
  end(nothingQueued?: boolean): void;
  close(): void;
  reset(): void;
  /** Whether an end of stream just reported was in fact a reset (see native-tcp-end.ts). */
  wasReset(): boolean;
}

/** EndWriter.write(): the kernel (or the queue behind earlier writes) took it all. */
export const WRITE_DONE = 0;
/** EndWriter.write(): the write waits for the peer; `onComplete` follows. */
export const WRITE_PENDING = 1;

/** One relay direction's writes to an end. */
export interface EndWriter {
  /** No write of this writer's is pending. */
  readonly idle: boolean;
  /** Writes buffer[0, length): WRITE_DONE, WRITE_PENDING, or a negative errno. */
  write(end: TcpEnd, buffer: Uint8Array, length?: number): number;
}

/** The way this process makes ends: how it dials, writes and accepts. */
export interface TcpEnds {
  /** For the log: "node's native TCP handles" or "net.Socket (public API)". */
  readonly description: string;
  /** Dials an IP literal of `family`; onConnect or onError (syscall 'connect') follows, asynchronously. */
  dial(address: string, port: number, family: 4 | 6): TcpEnd;
  writer(onComplete: (status: number) => void): EndWriter;
  /** A server for accept(): it only listens. */
  createServer(): net.Server;
  /** Takes a listening server's connections as ends, not reading; accept errors to `onError`. */
  accept(server: net.Server, onConnection: (end: TcpEnd) => void, onError: (err: NodeJS.ErrnoException) => void): void;
  /** Sets NODELAY and keepalive on the listening socket for its accepted ones; false: set them per end. */
  presetAcceptedOptions(server: net.Server, keepAliveMs: number): boolean;
  /** Once listening: whatever the path keeps per process (the batched reads' epoll set). */
  prepare(): void;
}

/** The error net.Socket raises for a failed system call on a socket. */
export function socketError(status: number, syscall: string, where = ''): NodeJS.ErrnoException {
  let code = 'EIO';
  try {
    code = getSystemErrorName(status);
  } catch {
    // not an errno: keep EIO
  }
  return Object.assign(new Error(`${syscall} ${code}${where === '' ? '' : ` ${where}`}`), { code, errno: status, syscall });
}
