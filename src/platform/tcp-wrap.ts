/**
 * Node's tcp_wrap and stream_wrap bindings (`process.binding`), the native TCP handles under
 * net.Socket that the fast TCP relay works on directly (native-tcp-end.ts says why), and the
 * listening net.Server's `_handle`, whose accepts it takes over. Looked up once; the probe says
 * whether all of it is there in the shape the relay expects.
 */
import net from 'node:net';
import { FORCED_REASON, legacyBinding, missing, publicPathForced, unusable, usable, type Probe } from './probe.js';

/** The parts of Node's TCPWrap (a LibuvStreamWrap) that native-tcp-end.ts uses. */
export interface NativeTcp {
  /** Called for each read, with `this` the handle; may return the buffer for the next read. */
  onread: ((this: NativeTcp) => Uint8Array | undefined) | null;
  readonly fd: number;
  /** Bytes libuv still has to write; shrinks as the kernel accepts a pending write piecewise. */
  readonly writeQueueSize: number;
  readStart(): number;
  readStop(): number;
  useUserBuffer(buffer: Uint8Array): void;
  writeBuffer(req: WriteRequest, buffer: Uint8Array): number;
  shutdown(req: ShutdownRequest): number;
  close(callback?: () => void): void;
  reset(callback?: () => void): number;
  getpeername(out: AddressOut): number;
  getsockname(out: AddressOut): number;
  setNoDelay(enable: boolean): number;
  setKeepAlive(enable: boolean, delaySeconds: number): number;
  connect(req: ConnectRequest, address: string, port: number): number;
  connect6(req: ConnectRequest, address: string, port: number): number;
  /** Ours: the end this handle belongs to. */
  owner?: unknown;
}

export interface AddressOut {
  address?: string;
  family?: string;
  port?: number;
}

/** Node's WriteWrap as the JS side sees it. */
export interface WriteRequest {
  handle?: unknown;
  /** Called by the native side, for a write that was pending, with its status (0 or a negative errno). */
  oncomplete?: (status: number) => void;
  /** Keeps the written buffer alive while the write is pending (as Node does). */
  buffer?: Uint8Array | null;
}

export interface ShutdownRequest {
  handle?: unknown;
  oncomplete?: (status: number) => void;
  end?: unknown;
}

export interface ConnectRequest {
  oncomplete?: (status: number) => void;
  end?: unknown;
  address?: string;
  port?: number;
}

/** A listening net.Server's native handle. */
export interface ServerHandle {
  onconnection: ((err: number, handle: NativeTcp | undefined) => void) | null;
  setNoDelay?(enable: boolean): number;
  setKeepAlive?(enable: boolean, delaySeconds: number): number;
}

export interface Bindings {
  readonly TCP: new (type: number) => NativeTcp;
  readonly TCPConnectWrap: new () => ConnectRequest;
  readonly SOCKET: number;
  readonly WriteWrap: new () => WriteRequest;
  readonly ShutdownWrap: new () => ShutdownRequest;
  readonly state: Int32Array;
  readonly kReadBytesOrError: number;
  readonly kLastWriteWasAsync: number;
}

const NAME = "process.binding('tcp_wrap', 'stream_wrap')";

let looked = false;
let found: Bindings | null = null;
let why = '';

function lookUp(): void {
  if (looked) return;
  looked = true;
  if (publicPathForced()) {
    why = FORCED_REASON;
    return;
  }
  const tcpLook = legacyBinding('tcp_wrap');
  if ('reason' in tcpLook) {
    why = tcpLook.reason;
    return;
  }
  const streamLook = legacyBinding('stream_wrap');
  if ('reason' in streamLook) {
    why = streamLook.reason;
    return;
  }
  const tcp = tcpLook.binding;
  const stream = streamLook.binding;
  const constants = tcp.constants as Record<string, unknown> | undefined;
  const proto = (tcp.TCP as { prototype?: Record<string, unknown> } | undefined)?.prototype;
  const shaped =
    typeof tcp.TCP === 'function' && typeof tcp.TCPConnectWrap === 'function' && typeof constants?.SOCKET === 'number' &&
    typeof stream.WriteWrap === 'function' && typeof stream.ShutdownWrap === 'function' &&
    stream.streamBaseState instanceof Int32Array && typeof stream.kReadBytesOrError === 'number' &&
    typeof stream.kLastWriteWasAsync === 'number' && typeof proto?.reset === 'function' && typeof proto.connect === 'function' &&
    typeof proto.useUserBuffer === 'function' && typeof proto.writeBuffer === 'function';
  // The listening server's handle is where accepts are taken over: a net.Server has the field
  // (null until it listens) on every Node this was written for.
  const serverField = '_handle' in new net.Server();
  if (!shaped || !serverField) {
    why = `${!shaped ? 'not of the expected shape' : 'net.Server has no _handle'} on Node.js ${process.version}`;
    return;
  }
  found = {
    TCP: tcp.TCP as Bindings['TCP'],
    TCPConnectWrap: tcp.TCPConnectWrap as Bindings['TCPConnectWrap'],
    SOCKET: constants!.SOCKET as number,
    WriteWrap: stream.WriteWrap as Bindings['WriteWrap'],
    ShutdownWrap: stream.ShutdownWrap as Bindings['ShutdownWrap'],
    state: stream.streamBaseState as Int32Array,
    kReadBytesOrError: stream.kReadBytesOrError as number,
    kLastWriteWasAsync: stream.kLastWriteWasAsync as number,
  };
}

export function probeTcpWrap(): Probe {
  lookUp();
  return found !== null ? usable(NAME) : unusable(NAME, why || missing());
}

/** The bindings; only after a usable probe (throws otherwise, saying why). */
export function nativeBindings(): Bindings {
  lookUp();
  if (found === null) throw new Error(`${NAME}: ${why}`);
  return found;
}

/** A listening server's native handle, or null (not listening). */
export function serverHandle(server: net.Server): ServerHandle | null {
  return (server as unknown as { _handle: ServerHandle | null })._handle ?? null;
}
