/**
 * The few Node internals the UDP relay's per-datagram path leans on: a dgram.Socket's state (found
 * by its symbol's description) and native handle, and udp_wrap's SendWrap. Everything is
 * feature-detected, and probed (probeDgramHandle, probeUdpSendWrap): when a piece is missing,
 * denied or ruled out (PACKETPONY_PUBLIC_PATH=1), the caller gets null and uses the public dgram
 * API (slower, same behaviour).
 *
 * Why: per datagram, dgram.Socket#send validates its arguments, builds a list, and on an
 * unconnected socket looks the address up (a dns.lookup that answers an IP literal through
 * process.nextTick and a closure), then creates a SendWrap; delivery to 'message' listeners goes
 * through an EventEmitter emit. The native handle underneath takes the same send in one call
 * (`handle.send(req, list, count[, port, address], hasCallback)`, returning the datagram's size + 1
 * when the kernel took it at once) and hands received datagrams to one `onmessage` function. The
 * request object is only bound to a native request when the send has to wait, so it, and the
 * one-element list, are reused until that happens: nothing is allocated per datagram here.
 *
 * Behaviour kept: as with send() without a callback, a failed send is dropped silently (Node
 * reports such errors only to a callback); a socket whose handle is gone (closed) drops the datagram
 * instead of throwing; received errors still go to dgram's own handler, which emits 'error'.
 *
 * Reading can also be stopped (pauseReading, for a hand-over) or handed to the batched path
 * (takeOverReading / resumeReading, for udp-batch.ts): Node keeps the socket, the batch reads it.
 */
import dgram from 'node:dgram';
import { FORCED_REASON, legacyBinding, missing, publicPathForced, thrownReason, unusable, usable, type Probe } from './probe.js';

type OnMessage = (nread: number, handle: UdpHandle, buf: Buffer, rinfo: dgram.RemoteInfo) => void;

/** The parts of Node's UDPWrap that we use (send is send6 on an IPv6 socket's handle). */
interface UdpHandle {
  onmessage: OnMessage;
  /** The socket's descriptor (Unix); -1 when it has none. */
  readonly fd?: number;
  recvStart?(): number;
  recvStop?(): number;
  close?(callback?: () => void): void;
  send(req: SendRequest, list: Buffer[], count: number, port: number, address: string, hasCallback: boolean): number;
  send(req: SendRequest, list: Buffer[], count: number, hasCallback: boolean): number;
}

interface SendRequest {
  /** Keeps the buffers alive while a queued send waits for the kernel (as dgram does). */
  list?: Buffer[];
}

interface DgramState {
  handle?: UdpHandle | null;
  receiving?: boolean;
}

type SendRequestClass = new () => SendRequest;

let sendRequestClass: SendRequestClass | null | undefined;
let sendRequestWhy = '';

function findSendRequestClass(): SendRequestClass | null {
  if (sendRequestClass !== undefined) return sendRequestClass;
  sendRequestClass = null;
  if (publicPathForced()) {
    sendRequestWhy = FORCED_REASON;
    return null;
  }
  const look = legacyBinding('udp_wrap');
  if ('reason' in look) sendRequestWhy = look.reason;
  else if (typeof look.binding.SendWrap === 'function') sendRequestClass = look.binding.SendWrap as SendRequestClass;
  else sendRequestWhy = `SendWrap is ${missing()}`;
  return sendRequestClass;
}

const SEND_NAME = "process.binding('udp_wrap').SendWrap";
const HANDLE_NAME = "dgram.Socket's state and native handle";

/** udp_wrap's send request, for sends straight to a socket's handle. */
export function probeUdpSendWrap(): Probe {
  return findSendRequestClass() !== null ? usable(SEND_NAME) : unusable(SEND_NAME, sendRequestWhy);
}

let handleProbe: Probe | undefined;

/**
 * A dgram.Socket's state and handle, as reading straight from the handle, pausing it and the
 * batched path's take-over need them. Looked at on a socket made for the purpose and closed at
 * once (creating one opens no descriptor: libuv makes it at bind).
 */
export function probeDgramHandle(): Probe {
  if (handleProbe !== undefined) return handleProbe;
  if (publicPathForced()) return (handleProbe = unusable(HANDLE_NAME, FORCED_REASON));
  let socket: dgram.Socket;
  try {
    socket = dgram.createSocket('udp4');
  } catch (error) {
    // The permission model may deny sockets outright (Node 26 without --allow-net).
    return (handleProbe = unusable(HANDLE_NAME, thrownReason(error)));
  }
  try {
    // onmessage is set at bind, so only the methods can be looked at here.
    const handle = stateOf(socket)?.handle;
    handleProbe =
      handle !== undefined && handle !== null && typeof handle.send === 'function' && typeof handle.recvStop === 'function' && typeof handle.recvStart === 'function' && typeof handle.close === 'function'
        ? usable(HANDLE_NAME)
        : unusable(HANDLE_NAME, `not of the expected shape on Node.js ${process.version}`);
  } finally {
    socket.close();
  }
  return handleProbe;
}

/** Whether the handle may be used (the probe said yes). */
function handleUsable(): boolean {
  return probeDgramHandle().usable;
}

let stateKey: symbol | null | undefined;

function stateOf(socket: dgram.Socket): DgramState | null {
  if (stateKey === undefined) {
    stateKey = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'state symbol') ?? null;
  }
  if (stateKey === null) return null;
  const state = (socket as unknown as Record<symbol, DgramState | undefined>)[stateKey];
  return state !== undefined && typeof state === 'object' ? state : null;
}

function usableHandle(state: DgramState | null): UdpHandle | null {
  const handle = state?.handle;
  return handle !== undefined && handle !== null && typeof handle.send === 'function' && typeof handle.onmessage === 'function'
    ? handle
    : null;
}

const EMPTY = Buffer.alloc(0);

/** Sends on one socket's handle; see the header. */
export class DatagramSender {
  readonly #state: DgramState;
  readonly #Request: SendRequestClass;
  #req: SendRequest;
  #one: Buffer[] = [EMPTY];
  #two: Buffer[] = [EMPTY, EMPTY];

  constructor(state: DgramState, Request: SendRequestClass) {
    this.#state = state;
    this.#Request = Request;
    this.#req = new Request();
  }

  /** To `address`:`port`, on an unconnected socket. */
  sendTo(buf: Buffer, port: number, address: string): void {
    const handle = this.#state.handle;
    if (handle === undefined || handle === null) return;
    const list = this.#one;
    list[0] = buf;
    const req = this.#req;
    if (handle.send(req, list, 1, port, address, false) === 0) this.#queued(req, list);
    else list[0] = EMPTY;
  }

  /** On a connected socket; `header`, when not null, goes first in the same datagram. */
  send(buf: Buffer, header: Buffer | null): void {
    const handle = this.#state.handle;
    if (handle === undefined || handle === null) return;
    const req = this.#req;
    if (header === null) {
      const list = this.#one;
      list[0] = buf;
      if (handle.send(req, list, 1, false) === 0) this.#queued(req, list);
      else list[0] = EMPTY;
      return;
    }
    const list = this.#two;
    list[0] = header;
    list[1] = buf;
    if (handle.send(req, list, 2, false) === 0) this.#queued(req, list);
    else list[0] = list[1] = EMPTY;
  }

  /** The kernel could not take it at once: the request and list now belong to the queued send. */
  #queued(req: SendRequest, list: Buffer[]): void {
    req.list = list;
    this.#req = new this.#Request();
    if (list.length === 1) this.#one = [EMPTY];
    else this.#two = [EMPTY, EMPTY];
  }
}

/** A sender for a bound socket, or null when Node's internals are not as expected. */
export function datagramSender(socket: dgram.Socket): DatagramSender | null {
  if (!handleUsable()) return null;
  const Request = findSendRequestClass();
  const state = stateOf(socket);
  if (Request === null || state === null || usableHandle(state) === null) return null;
  return new DatagramSender(state, Request);
}

/**
 * Delivers the socket's datagrams to `onDatagram` straight from its handle, instead of 'message'
 * events. Returns a function that puts dgram's own delivery back, or null (nothing changed) when the
 * handle is not as expected. Receive errors keep going to dgram, which emits them as 'error'.
 */
export function interceptDatagrams(
  socket: dgram.Socket,
  onDatagram: (buf: Buffer, rinfo: dgram.RemoteInfo) => void,
): (() => void) | null {
  if (!handleUsable()) return null;
  const state = stateOf(socket);
  const handle = usableHandle(state);
  if (handle === null) return null;
  const original = handle.onmessage;
  handle.onmessage = (nread, h, buf, rinfo) => {
    if (nread < 0) {
      original(nread, h, buf, rinfo);
      return;
    }
    onDatagram(buf, rinfo);
  };
  return () => {
    if (state?.handle === handle) handle.onmessage = original;
  };
}

/**
 * Stops a dgram socket reading without closing it (a listener handing over to its successor).
 * Node 20 has no public API for this (its own close path calls the handle's recvStop()). Returns
 * false (and changes nothing) if Node's internals do not look as expected.
 */
export function pauseReading(socket: dgram.Socket): boolean {
  if (!handleUsable()) return false;
  const state = stateOf(socket);
  const handle = usableHandle(state);
  if (state === null || handle === null || typeof handle.recvStop !== 'function') return false;
  if (state.receiving === true) {
    handle.recvStop();
    state.receiving = false;
  }
  return true;
}

/**
 * Hands a bound socket's reading over to udp-batch.ts: Node stops reading it (libuv then no longer
 * polls the descriptor, which the batch's own poll needs) and the descriptor is returned, or null
 * when Node's internals are not as expected (nothing changed then). `beforeClose` runs inside the
 * socket's close(), before the descriptor is closed: a poll left on a closed descriptor would
 * catch the events of the next socket that gets its number.
 */
export function takeOverReading(socket: dgram.Socket, beforeClose: (() => void) | null): number | null {
  if (!handleUsable()) return null;
  const state = stateOf(socket);
  const handle = usableHandle(state);
  if (state === null || handle === null) return null;
  const { fd } = handle;
  if (typeof fd !== 'number' || fd < 0 || typeof handle.close !== 'function' || !pauseReading(socket)) return null;
  if (beforeClose !== null) {
    const close = handle.close;
    handle.close = function closeAfterBatch(this: UdpHandle, callback?: () => void): void {
      beforeClose();
      close.call(this, callback);
    };
  }
  return fd;
}

/** Undoes takeOverReading's stop when the batch could not take the socket after all. */
export function resumeReading(socket: dgram.Socket): void {
  if (!handleUsable()) return;
  const state = stateOf(socket);
  const handle = usableHandle(state);
  if (state === null || handle === null || state.receiving === true || typeof handle.recvStart !== 'function') return;
  handle.recvStart();
  state.receiving = true;
}
