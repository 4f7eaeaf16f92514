/**
 * The UDP relay's datagrams through the addon's batches (udp-batch.ts over src/native/udp_batch.c),
 * a call per batch (udp-path.ts): the default where the addon is built. The sockets are read
 * natively with recvmmsg, a turn of the event loop at a time, and the relay's rules run once per
 * batch over shared tables; replies to clients leave in one sendmmsg. Node no longer reads the
 * listening socket once the path has it, and close() does not give it back: datagrams then wait
 * in the kernel, as for a hand-over. Why this path exists, in figures: docs/performance.md,
 * "Measurements behind the code".
 *
 * A session is found by its client's address as four 32-bit words and its port, compared as
 * numbers (SessionTable.getByWords); a string is only made for a new session or a log. A send the
 * kernel cannot take at once (a full socket buffer) is dropped, where Node's path would queue it
 * in memory.
 */
import type dgram from 'node:dgram';
import { constants as osConstants } from 'node:os';
import { resumeReading, takeOverReading } from '../platform/index.js';
import { socketError } from '../platform/tcp-end.js';
import {
  addressOf, DatagramBatch, R_ADDR, R_ID, R_LENGTH, R_OFFSET, R_PORT, R_SCOPE, R_TRUNCATED, RECV_STRIDE, type UdpBatchAddon,
} from './udp-batch.js';
import type { DatagramPath, DatagramRelay } from './udp-path.js';
import { closeQuietly } from './udp-upstream.js';
import type { UdpSession } from './udp-sessions.js';

/**
 * Datagrams one batch holds (slots of udp.buffer_size each in the arena; only the pages datagrams
 * land in become resident). More than a turn of the event loop brings under load.
 */
const BATCH_SLOTS = 128;
const { ECONNREFUSED } = osConstants.errno;

export class BatchedDatagramPath<A> implements DatagramPath<A> {
  readonly batched = true;
  readonly #relay: DatagramRelay<A>;
  readonly #batch: DatagramBatch;
  /** The listening socket's id in the batch. */
  #listenerId = -1;
  #listenerFamily: 4 | 6 = 4;
  /** Sessions by their upstream socket's batch id. */
  readonly #byId: (UdpSession<A> | undefined)[] = [];
  /** Ids of ended sessions, freed for reuse after the next batch (which may still name them). */
  #retiredIds: number[] = [];
  /** The entry being handled, for #entryAddress and attach(). */
  #entry = 0;

  /**
   * Moves the listening socket to a batch over `addon`, or answers why it could not (Node's
   * reading of the socket is then left as it was).
   */
  static take<A>(relay: DatagramRelay<A>, socket: dgram.Socket, addon: UdpBatchAddon): BatchedDatagramPath<A> | string {
    const path = new BatchedDatagramPath(relay, addon);
    const batch = path.#batch;
    const fd = takeOverReading(socket, () => batch.unwatch(path.#listenerId));
    const id = fd === null ? -1 : batch.watch(fd);
    if (id < 0) {
      if (fd !== null) resumeReading(socket);
      batch.close();
      return `the batched path could not take the socket (${id})`;
    }
    path.#listenerId = id;
    path.#listenerFamily = socket.address().family === 'IPv6' ? 6 : 4;
    return path;
  }

  private constructor(relay: DatagramRelay<A>, addon: UdpBatchAddon) {
    this.#relay = relay;
    this.#batch = new DatagramBatch(addon, relay.bufferSize, BATCH_SLOTS, this.#onBatch);
  }

  /** Hands the upstream socket's reading to the batch; its PROXY header and reply address with it. */
  attach(session: UdpSession<A>): boolean {
    const batch = this.#batch;
    const upstream = session.upstream;
    const fd = takeOverReading(upstream, null);
    const id = fd === null ? -1 : batch.watch(fd);
    if (id < 0) {
      closeQuietly(upstream);
      this.#relay.error('session_create', fd === null ? new Error('the upstream socket has no descriptor') : socketError(id, 'epoll_ctl'), session.clientIp, session.clientPort);
      return false;
    }
    session.batchId = id;
    this.#byId[id] = session;
    if (session.header !== null) batch.setHeader(id, session.header);
    // The words the batch reported the client's datagram with: replies go to them.
    const a = this.#entry + R_ADDR;
    const recv = batch.recv;
    session.w0 = recv[a]!;
    session.w1 = recv[a + 1]!;
    session.w2 = recv[a + 2]!;
    session.w3 = recv[a + 3]!;
    session.scope = recv[this.#entry + R_SCOPE]!;
    return true;
  }

  detach(session: UdpSession<A>): void {
    const id = session.batchId;
    if (id < 0) return;
    this.#batch.unwatch(id);
    this.#byId[id] = undefined;
    this.#retiredIds.push(id);
  }

  stopReceiving(): boolean {
    this.#batch.pause(this.#listenerId);
    return true;
  }

  close(): void {
    this.#batch.close();
  }

  readonly #onBatch = (count: number): void => {
    const batch = this.#batch;
    const relay = this.#relay;
    const recv = batch.recv;
    const listenerId = this.#listenerId;
    for (let e = 0, end = count * RECV_STRIDE; e < end; e += RECV_STRIDE) {
      const id = recv[e + R_ID]!;
      const length = recv[e + R_LENGTH]!;
      if (id === listenerId) {
        if (length >= 0) this.#fromClient(batch, recv, e, length);
        else relay.error('client_read', socketError(length, 'recvmsg'), undefined, 0);
        continue;
      }
      const session = this.#byId[id];
      if (session === undefined) continue; // ended since the datagram was read
      if (length < 0) {
        relay.upstreamError(session, socketError(length, 'recvmsg'));
      } else if (recv[e + R_TRUNCATED] !== 0) {
        relay.oversize(session.clientAddress, session.clientPort, 'received');
      } else if (relay.fromTarget(session, length)) {
        batch.queueTo(listenerId, recv[e + R_OFFSET]!, length, session.clientPort, session.w0, session.w1, session.w2, session.w3, session.scope);
      }
    }
    if (batch.flush() > 0) batch.failures(this.#onSendFailure);
    if (this.#retiredIds.length > 0) {
      for (const id of this.#retiredIds) batch.release(id);
      this.#retiredIds = [];
    }
  };

  #fromClient(batch: DatagramBatch, recv: Int32Array, e: number, length: number): void {
    const relay = this.#relay;
    const port = recv[e + R_PORT]!;
    this.#entry = e;
    if (recv[e + R_TRUNCATED] !== 0) {
      relay.oversize(this.#entryAddress(), port, 'sent');
      return;
    }
    const a = e + R_ADDR;
    let session = relay.table.getByWords(port, recv[a]!, recv[a + 1]!, recv[a + 2]!, recv[a + 3]!, this.#entryAddress);
    if (session === undefined) {
      session = relay.openSession(this.#entryAddress(), port);
      if (session === undefined) return;
    }
    if (relay.fromClient(session, length)) batch.queue(session.batchId, recv[e + R_OFFSET]!, length);
  }

  /** The source address of the batch entry being handled (new sessions and logs only). */
  readonly #entryAddress = (): string => addressOf(this.#batch.recv, this.#entry, this.#listenerFamily);

  /** A datagram the kernel refused in a flush: as on Node's path, only a refused target counts. */
  readonly #onSendFailure = (id: number, errno: number): void => {
    const session = this.#byId[id];
    if (session !== undefined && errno === ECONNREFUSED) this.#relay.upstreamError(session, socketError(-errno, 'send'));
  };
}
