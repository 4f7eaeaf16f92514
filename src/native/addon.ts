/**
 * PacketPony's native addon (addon.c and the files it names), loaded once, or the reason it is not
 * there. Built by `npm run build` (build.mjs) on Linux when a C compiler is there; the compiled
 * file sits next to this module's JavaScript, in dist/src/native/abi-<process.versions.modules>,
 * one folder per Node ABI (a build for another Node line must not replace this one's). Every user
 * has a Node path for when it is missing: the batched UDP path (src/proxy/udp-batch.ts), the TCP
 * relay's direct socket calls and batched reads (src/proxy/tcp-handle.ts, src/proxy/tcp-reads.ts),
 * the child's loop clock (src/child/loop-clock.ts) and trim(). The unix datagram sockets
 * (src/native/unix-dgram.ts) have none: without the addon, a unix syslog sink cannot start and
 * systemd is not notified.
 */
import { createRequire } from 'node:module';
import type { UnixDatagramCalls } from './unix-dgram.js';

/** Fields per datagram in the UDP tables: udp_batch.c's RECV_STRIDE and SEND_STRIDE. */
export const RECV_STRIDE = 10;
export const SEND_STRIDE = 9;

/** A UDP batch group (udp_batch.c): its arena and its two tables. */
export interface Opened {
  readonly group: object;
  readonly arena: ArrayBuffer;
  readonly recv: ArrayBuffer;
  readonly send: ArrayBuffer;
}

/** unix_dgram.c's calls are declared with their wrapper, src/native/unix-dgram.ts. */
export interface NativeAddon extends UnixDatagramCalls {
  // udp_batch.c
  readonly constants: { readonly RECV_STRIDE: number; readonly SEND_STRIDE: number };
  open(onBatch: (count: number) => void, slotBytes: number, slots: number): Opened;
  watch(group: object, id: number, fd: number): number;
  unwatch(group: object, id: number): void;
  pause(group: object, id: number): void;
  header(group: object, id: number, header: Buffer | null): number;
  flush(group: object, count: number): number;
  close(group: object): void;
  // socket_calls.c
  sendNow(fd: number, buffer: Uint8Array, length: number): number;
  shutdownNow(fd: number): number;
  peerConnected(fd: number): number;
  unsentBytes(fd: number): number;
  // tcp_reads.c
  tcpReadsOpen(onBatch: (count: number) => void, capacity: number): ArrayBuffer;
  tcpReadStart(id: number, fd: number, buffer: Uint8Array | null): number;
  tcpReadStop(id: number): void;
  tcpReadInto(id: number, buffer: Uint8Array): void;
  tcpReadForget(id: number, closed: boolean): void;
  // process_calls.c
  trim(): number;
  loopTime(): ArrayBuffer | undefined;
}

/** Where this Node's build is, relative to this module (build.mjs puts it there). */
const RELATIVE = `./abi-${process.versions.modules}/packetpony_native.node`;
const FILE = `dist/src/native/${RELATIVE.slice(2)}`;
const FUNCTIONS: ReadonlyArray<keyof NativeAddon> = [
  'open', 'watch', 'unwatch', 'pause', 'header', 'flush', 'close',
  'sendNow', 'shutdownNow', 'peerConnected', 'unsentBytes',
  'tcpReadsOpen', 'tcpReadStart', 'tcpReadStop', 'tcpReadInto', 'tcpReadForget', 'trim', 'loopTime',
  'unixOpen', 'unixConnect', 'unixBind', 'unixSend', 'unixReceive', 'unixClose', 'unixPoll', 'unixPollEvents', 'unixPollClose',
];

let addon: NativeAddon | null | undefined;
let missing = '';

/** The compiled addon, or null (nativeAddonMissing() says why). Loaded once. */
export function nativeAddon(): NativeAddon | null {
  if (addon !== undefined) return addon;
  addon = null;
  if (process.platform !== 'linux') {
    missing = `not built on ${process.platform} (it uses Linux's recvmmsg and sendmmsg)`;
    return addon;
  }
  try {
    const loaded = createRequire(import.meta.url)(RELATIVE) as NativeAddon;
    // The strides and the exports are the contract between the two sides: a stale build must not
    // be misread.
    const stale =
      loaded.constants?.RECV_STRIDE !== RECV_STRIDE || loaded.constants.SEND_STRIDE !== SEND_STRIDE ||
      FUNCTIONS.some((name) => typeof loaded[name] !== 'function');
    if (stale) {
      missing = `${FILE} is from another version (run npm run build)`;
      return addon;
    }
    addon = loaded;
  } catch (err) {
    const error = err as NodeJS.ErrnoException;
    missing = error.code === 'MODULE_NOT_FOUND'
      ? `${FILE} is not there: not built for this Node (${process.version}; npm run build under it)`
      : `${FILE} could not be loaded (${error.message.split('\n')[0]})`;
  }
  return addon;
}

/** Why nativeAddon() answers null ('' when it does not). */
export function nativeAddonMissing(): string {
  nativeAddon();
  return missing;
}

/**
 * Gives the C heap's free pages back to the system (glibc's malloc_trim), where the addon is
 * loaded; see trim() in process_calls.c. Returns whether anything went back.
 */
export function trimNativeHeap(): boolean {
  return nativeAddon()?.trim() === 1;
}
