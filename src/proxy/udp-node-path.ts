/**
 * The UDP relay's datagrams through Node's dgram sockets, a call per datagram (udp-path.ts): the
 * path where the batched one (udp-batched-path.ts) is not built, not possible, or turned off.
 *
 * Datagrams come straight from the sockets' native handles and go straight to them
 * (src/platform/dgram-internals.ts): no 'message' emit, and no per-send argument checks, address
 * lookup, process.nextTick or request object, which dgram.Socket#send costs on the unconnected
 * listening socket; what remains is Node's Buffer and rinfo of each received datagram. Where
 * Node's internals are not as expected, the public dgram API is used instead, with the same
 * behaviour. A send the kernel cannot take at once (a full socket buffer) is queued in memory by
 * Node, where the batched path drops it.
 */
import type dgram from 'node:dgram';
import { datagramSender, interceptDatagrams, pauseReading, type DatagramSender } from '../platform/index.js';
import type { DatagramPath, DatagramRelay } from './udp-path.js';
import type { UdpSession } from './udp-sessions.js';

export class NodeDatagramPath<A> implements DatagramPath<A> {
  readonly batched = false;
  readonly #relay: DatagramRelay<A>;
  readonly #socket: dgram.Socket;
  /** Replies to clients, on the listening socket's handle; null: socket.send(). */
  readonly #clientSender: DatagramSender | null;
  /** Puts dgram's own 'message' delivery back on the listening socket; null: we listen to it. */
  #undoIntercept: (() => void) | null;

  constructor(relay: DatagramRelay<A>, socket: dgram.Socket) {
    this.#relay = relay;
    this.#socket = socket;
    this.#clientSender = datagramSender(socket);
    this.#undoIntercept = interceptDatagrams(socket, this.#onClientMessage);
    if (this.#undoIntercept === null) socket.on('message', this.#onClientMessage);
  }

  attach(session: UdpSession<A>): boolean {
    const upstream = session.upstream;
    // One closure pair per session, none per datagram.
    const onReply = (msg: Buffer): void => this.#onTargetMessage(session, msg);
    if (interceptDatagrams(upstream, onReply) === null) upstream.on('message', onReply);
    session.sender = datagramSender(upstream);
    return true;
  }

  detach(): void {
    // The upstream socket's close takes its listeners with it.
  }

  stopReceiving(): boolean {
    return pauseReading(this.#socket);
  }

  close(): void {
    this.#undoIntercept?.();
    this.#undoIntercept = null;
    this.#socket.off('message', this.#onClientMessage);
  }

  readonly #onClientMessage = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
    const relay = this.#relay;
    const bytes = msg.length;
    if (bytes > relay.bufferSize) {
      relay.oversize(rinfo.address, rinfo.port, 'sent');
      return;
    }
    let session = relay.table.get(rinfo.address, rinfo.port);
    if (session === undefined) {
      session = relay.openSession(rinfo.address, rinfo.port);
      if (session === undefined) return;
    }
    if (!relay.fromClient(session, bytes)) return;
    const header = session.header;
    const sender = session.sender;
    if (sender !== null) sender.send(msg, header);
    else if (header === null) session.upstream.send(msg);
    else session.upstream.send([header, msg]);
  };

  #onTargetMessage(session: UdpSession<A>, msg: Buffer): void {
    const relay = this.#relay;
    const bytes = msg.length;
    if (bytes > relay.bufferSize) {
      relay.oversize(session.clientAddress, session.clientPort, 'received');
      return;
    }
    if (!relay.fromTarget(session, bytes)) return;
    const sender = this.#clientSender;
    if (sender !== null) sender.sendTo(msg, session.clientPort, session.clientAddress);
    else this.#socket.send(msg, session.clientPort, session.clientAddress);
  }
}
