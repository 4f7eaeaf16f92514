/**
 * The batched datagram path: the TypeScript side of src/native/udp_batch.c (read its header for
 * why and how). A DatagramBatch reads a relay's sockets natively, a turn of the event loop at a
 * time, and hands the relay one call per batch; the relay answers by queueing sends, which go out
 * in one flush (one sendmmsg for the replies to clients on the listening socket).
 *
 * Optional. The addon is built by `npm run build` (src/native/build.mjs) on Linux when a C compiler
 * is there; without it loadUdpBatch() answers null and the relay uses Node's dgram path
 * (udp-node-path.ts): the same behaviour, slower. PACKETPONY_UDP_BATCH=0 chooses that path on
 * purpose (the listener then asks the relay for Node's path: path-switches.ts).
 *
 * The tables are shared Int32Arrays, read and written by index with the R_ and S_ offsets below:
 * nothing is allocated per datagram on either side. Addresses are four 32-bit words of the 16-byte
 * IPv6 address (an IPv4 peer IPv4-mapped), compared as numbers; a string is only made for a new
 * session (addressOf).
 */
import ipaddr from 'ipaddr.js';
import { probeDgramHandle } from '../platform/index.js';
import { nativeAddon, nativeAddonMissing, RECV_STRIDE, SEND_STRIDE, type NativeAddon } from '../native/addon.js';

/** Fields of one received datagram in `recv` (stride RECV_STRIDE). */
export const R_ID = 0;
export const R_OFFSET = 1;
/** The datagram's length, or -errno for a receive error on the socket. */
export const R_LENGTH = 2;
/** 1: longer than a slot (udp.buffer_size); R_LENGTH is still the real length. */
export const R_TRUNCATED = 3;
export const R_PORT = 4;
export const R_ADDR = 5;
export const R_SCOPE = 9;
export { RECV_STRIDE };
const S_ID = 0;
const S_OFFSET = 1;
const S_LENGTH = 2;
const S_PORT = 3;
const S_ADDR = 4;
const S_SCOPE = 8;

/** The third word of an IPv4-mapped address (bytes 00 00 ff ff), as an Int32Array reads it here. */
const MAPPED_WORD = new Int32Array(new Uint8Array([0, 0, 0xff, 0xff]).buffer)[0]!;

/** The addon's part the batched UDP path uses. */
export type UdpBatchAddon = NativeAddon;

/** The addon for the batched UDP path, or null (then `udpBatchUnavailableReason()` says why). */
export function loadUdpBatch(): UdpBatchAddon | null {
  // The batch reads dgram's sockets by their descriptors, taken from their native handles.
  return !probeDgramHandle().usable ? null : nativeAddon();
}

export function udpBatchUnavailableReason(): string {
  const handle = probeDgramHandle();
  if (!handle.usable) return `the batch takes the sockets from their native handles, and ${handle.name} is ${handle.reason}`;
  return nativeAddonMissing();
}

/**
 * The source address of received datagram `entry`, as Node would report it on a socket of that
 * family: a.b.c.d on IPv4; on IPv6, an IPv4-mapped peer as ::ffff:a.b.c.d, others in RFC 5952 form.
 */
export function addressOf(recv: Int32Array, entry: number, family: 4 | 6): string {
  const w = entry + R_ADDR;
  if (family === 4 || (recv[w] === 0 && recv[w + 1] === 0 && recv[w + 2] === MAPPED_WORD)) {
    const v4 = new Uint8Array(recv.buffer, recv.byteOffset + (w + 3) * 4, 4);
    const dotted = `${v4[0]}.${v4[1]}.${v4[2]}.${v4[3]}`;
    return family === 4 ? dotted : `::ffff:${dotted}`;
  }
  const bytes = new Uint8Array(recv.buffer, recv.byteOffset + w * 4, 16);
  return ipaddr.fromByteArray(Array.from(bytes)).toString();
}

export class DatagramBatch {
  /** Where received datagrams land; sends name a range of it. */
  readonly arena: Buffer;
  readonly recv: Int32Array;
  readonly #send: Int32Array;
  readonly #addon: UdpBatchAddon;
  readonly #group: object;
  #queued = 0;
  /** The entries of the last flush, for failures(). */
  #flushed = 0;
  #nextId = 0;
  readonly #freeIds: number[] = [];
  #closed = false;

  constructor(native: UdpBatchAddon, slotBytes: number, slots: number, onBatch: (count: number) => void) {
    this.#addon = native;
    const opened = native.open(onBatch, slotBytes, slots);
    this.#group = opened.group;
    this.arena = Buffer.from(opened.arena);
    this.recv = new Int32Array(opened.recv);
    this.#send = new Int32Array(opened.send);
  }

  /**
   * Starts reading `fd` (Node's own reading of it must be stopped). Returns the socket's id for
   * the tables, or a negative errno.
   */
  watch(fd: number): number {
    if (this.#closed) return -9; // EBADF
    const id = this.#freeIds.pop() ?? this.#nextId++;
    const rc = this.#addon.watch(this.#group, id, fd);
    if (rc !== 0) {
      this.#freeIds.push(id);
      return rc;
    }
    return id;
  }

  /**
   * Stops reading socket `id`, before its descriptor is closed. The id is free for reuse only
   * after release(id): the relay holds it back until a batch that may still name it is done.
   */
  unwatch(id: number): void {
    if (!this.#closed) this.#addon.unwatch(this.#group, id);
  }

  /** Stops reading socket `id`, which stays usable for sends (a listener handing over). */
  pause(id: number): void {
    if (!this.#closed) this.#addon.pause(this.#group, id);
  }

  release(id: number): void {
    this.#freeIds.push(id);
  }

  /** What goes first in every datagram sent on socket `id` (a PROXY v2 header); null: nothing. */
  setHeader(id: number, header: Buffer | null): void {
    if (!this.#closed) this.#addon.header(this.#group, id, header);
  }

  /** Queues arena[offset, offset + length) on connected socket `id`. */
  queue(id: number, offset: number, length: number): void {
    const e = this.#queued++ * SEND_STRIDE;
    const send = this.#send;
    send[e + S_ID] = id;
    send[e + S_OFFSET] = offset;
    send[e + S_LENGTH] = length;
    send[e + S_PORT] = 0;
  }

  /** Queues arena[offset, offset + length) on unconnected socket `id`, to the given address. */
  queueTo(id: number, offset: number, length: number, port: number, w0: number, w1: number, w2: number, w3: number, scope: number): void {
    const e = this.#queued++ * SEND_STRIDE;
    const send = this.#send;
    send[e + S_ID] = id;
    send[e + S_OFFSET] = offset;
    send[e + S_LENGTH] = length;
    send[e + S_PORT] = port;
    send[e + S_ADDR] = w0;
    send[e + S_ADDR + 1] = w1;
    send[e + S_ADDR + 2] = w2;
    send[e + S_ADDR + 3] = w3;
    send[e + S_SCOPE] = scope;
  }

  /** Sends what was queued; answers how many failed (see failures()). */
  flush(): number {
    const count = this.#queued;
    this.#queued = 0;
    this.#flushed = count;
    if (count === 0 || this.#closed) return 0;
    return this.#addon.flush(this.#group, count);
  }

  /** Calls `onFailure(id, errno)` for each datagram of the last flush the kernel refused. */
  failures(onFailure: (id: number, errno: number) => void): void {
    const send = this.#send;
    for (let e = 0, end = this.#flushed * SEND_STRIDE; e < end; e += SEND_STRIDE) {
      const length = send[e + S_LENGTH]!;
      if (length < 0) onFailure(send[e + S_ID]!, -length);
    }
  }

  /** Stops every watch. Idempotent; safe inside the batch callback (later calls do nothing). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queued = 0;
    this.#addon.close(this.#group);
  }
}
