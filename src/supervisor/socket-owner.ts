/**
 * The supervisor binds every listening socket itself and hands it to the listener's child.
 *
 * Why: a bind error (port in use, privileged port) is seen once, here, with the listener's name; a
 * child that crashes or is replaced does not close the socket, so connection attempts wait in the
 * kernel's backlog instead of being refused while the next child starts; and children need no
 * privilege to bind. The supervisor never listens, accepts or reads on it: the first child's
 * listen() (or its first read) makes the shared socket serve, and it keeps serving (its backlog
 * filling) between children.
 *
 * How, in order of preference:
 * 1. Node's own helpers, the ones `cluster` binds its shared handles with
 *    (`net._createServerHandle`, `dgram._createSocketHandle`, src/platform/socket-helpers.ts):
 *    a native handle bound and not listening, sent to the child with pp:start
 *    (`subprocess.send(message, handle)`). Preferred where it exists: it needs nothing built, the
 *    handle can be handed to any child at any time, and it is what cluster relies on.
 * 2. Our addon (src/native/socket_bind.c): socket(), setsockopt() and bind() exactly as libuv
 *    does, giving a plain descriptor that each child inherits at spawn (an integer in fork's stdio
 *    array) and serves with public APIs only, `server.listen({ fd })` and dgram's `bind({ fd })`.
 *    Taken where the helper is gone (`dgram._createSocketHandle` on Node 26) or ruled out
 *    (PACKETPONY_PUBLIC_PATH=1). It keeps every property above, on every Node line.
 * Not taken: binding a public net.Server or dgram.Socket here and sending it along. Both start
 * accepting or reading in the supervisor the moment they are bound (neither has a public way to
 * stop), so the supervisor would take connections and datagrams meant for the child.
 * Without both (Node 26, no C compiler at install), a listener of that protocol cannot be owned:
 * its bind fails with a message saying what is missing, and the supervisor retries like any bind.
 */
import os from 'node:os';
import { getSystemErrorName } from 'node:util';
import { formatEndpoint } from '../config/address.js';
import type { ListenerConfig } from '../config/types.js';
import {
  bindDescriptor,
  bindTcpHandle,
  bindUdpHandle,
  closeDescriptor,
  allowReuseport,
  listenDescriptor,
  pendingInput,
  probeAddonSockets,
  probeReuseportSteering,
  probeServerHandleHelper,
  steerBySource,
  probeSocketHandleHelper,
  type NativeHandle,
  type Probe,
} from '../platform/index.js';

export type { NativeHandle } from '../platform/index.js';

/** How the child gets the socket: a handle sent with pp:start, or a descriptor inherited at spawn. */
export type SocketTransfer = { readonly kind: 'handle'; readonly handle: NativeHandle } | { readonly kind: 'fd'; readonly fd: number };

export interface BoundSocket {
  readonly transfer: SocketTransfer;
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
  /** Closes the supervisor's copy (idempotent); children keep theirs until they close them. */
  close(): void;
}

export type BindResult = { ok: true; socket: BoundSocket } | { ok: false; code: string; message: string };

export type OwnershipPath = 'node-helper' | 'addon-descriptor';

export interface OwnershipChoice {
  /** null: neither path is usable for this protocol (why: `probes`). */
  readonly path: OwnershipPath | null;
  /** The helper's probe, then the addon's. */
  readonly probes: readonly Probe[];
}

const choices = new Map<'tcp' | 'udp', OwnershipChoice>();

/** Which path binds this protocol's sockets, decided once per process. */
export function ownershipPath(protocol: 'tcp' | 'udp'): OwnershipChoice {
  let choice = choices.get(protocol);
  if (choice === undefined) {
    const helper = protocol === 'tcp' ? probeServerHandleHelper() : probeSocketHandleHelper();
    const addon = probeAddonSockets();
    const path = helper.usable ? 'node-helper' : addon.usable ? 'addon-descriptor' : null;
    choice = { path, probes: [helper, addon] };
    choices.set(protocol, choice);
  }
  return choice;
}

/** Whether this process can own sockets of both protocols. */
export function socketOwnershipSupported(): boolean {
  return ownershipPath('tcp').path !== null && ownershipPath('udp').path !== null;
}

function hint(code: string, config: ListenerConfig): string {
  const port = config.listen.port;
  switch (code) {
    case 'EADDRINUSE':
      return `another program holds the address (see: ss -${config.protocol === 'tcp' ? 'lt' : 'lu'}np 'sport = :${port}'); PacketPony retries until it is free`;
    case 'EACCES':
      return `ports below 1024 need root or the CAP_NET_BIND_SERVICE capability (the systemd unit grants it); PacketPony retries`;
    case 'EADDRNOTAVAIL':
      return 'no network interface has this address; check listen_address or the interface configuration; PacketPony retries';
    default:
      return 'PacketPony retries';
  }
}

function where(config: ListenerConfig): string {
  return `${formatEndpoint(config.listen.host || '*', config.listen.port)}/${config.protocol}`;
}

function failure(errno: number, config: ListenerConfig): BindResult {
  const code = getSystemErrorName(errno);
  return { ok: false, code, message: `cannot listen on ${where(config)}: ${code}: ${hint(code, config)}` };
}

function fromHandle(handle: NativeHandle, config: ListenerConfig): BindResult {
  const out: Record<string, unknown> = {};
  // A TCP bind that lost to a listening socket is reported by libuv only later, except here.
  const err = handle.getsockname(out);
  if (err !== 0) {
    handle.close();
    return failure(err, config);
  }
  let open = true;
  return {
    ok: true,
    socket: {
      transfer: { kind: 'handle', handle },
      address: String(out.address),
      port: Number(out.port),
      family: out.family === 'IPv6' ? 'IPv6' : 'IPv4',
      close: () => {
        if (open) handle.close();
        open = false;
      },
    },
  };
}

/** Binds the listener's address. The socket stays open until `close()`, whatever its children do. */
export function bindListener(config: ListenerConfig): BindResult {
  const choice = ownershipPath(config.protocol);
  return bindListenerOn(choice.path, config, choice.probes);
}

/** bindListener on a given path (tests take both); `probes` say why when `path` is null. */
export function bindListenerOn(path: OwnershipPath | null, config: ListenerConfig, probes: readonly Probe[] = []): BindResult {
  try {
    return bindOn(path, config, probes);
  } catch (error) {
    // Node 26's permission model denies sockets without --allow-net, by throwing.
    const code = (error as NodeJS.ErrnoException).code ?? 'PP_ERR_SOCKET_OWNERSHIP';
    const denied = code === 'ERR_ACCESS_DENIED' ? ' (node runs with --permission: add --allow-net)' : '';
    return { ok: false, code, message: `cannot listen on ${where(config)}: ${(error as Error).message}${denied}; PacketPony retries` };
  }
}

function bindOn(path: OwnershipPath | null, config: ListenerConfig, probes: readonly Probe[]): BindResult {
  const { host, port } = config.listen;
  if (path === 'node-helper') {
    const handle = config.protocol === 'tcp' ? bindTcpHandle(host, port, config.ipv6_only) : bindUdpHandle(host, port, config.ipv6_only);
    return typeof handle === 'number' ? failure(handle, config) : fromHandle(handle, config);
  }
  if (path === 'addon-descriptor') {
    const bound = bindDescriptor(config.protocol === 'udp', host, port, config.ipv6_only);
    if (typeof bound === 'number') return failure(bound, config);
    let open = true;
    const close = (): void => {
      if (open) closeDescriptor(bound.fd);
      open = false;
    };
    return { ok: true, socket: { transfer: { kind: 'fd', fd: bound.fd }, address: bound.address, port: bound.port, family: bound.family, close } };
  }
  const why = probes.map((p) => `${p.name}: ${p.reason}`).join('; ');
  return {
    ok: false,
    code: 'PP_ERR_SOCKET_OWNERSHIP',
    message: `cannot own a ${config.protocol.toUpperCase()} socket for ${where(config)} on Node.js ${process.version} (${why}): build the native addon (a C compiler, then npm run build) or run a Node.js that has the helper; PacketPony retries`,
  };
}

/**
 * The sockets of a listener with several workers: `count` descriptors bound by the addon with
 * SO_REUSEPORT, in worker order, TCP ones listening in that order too (a group's index of a socket
 * is its join order: src/native/reuseport.c), and steered by source address. `first`: a socket
 * of this address already serving (a reload that grows the group), which becomes index 0 and
 * keeps serving; the sockets bound here follow it. Nothing is left open on failure.
 */
export function bindWorkerSockets(config: ListenerConfig, count: number, existing: readonly BoundSocket[] = []): { ok: true; sockets: BoundSocket[] } | { ok: false; code: string; message: string } {
  const steering = probeReuseportSteering();
  if (!steering.usable || !probeAddonSockets().usable) {
    return { ok: false, code: 'PP_ERR_WORKERS', message: `cannot run ${count} workers on ${where(config)}: ${steering.reason}; build the native addon (a C compiler, then npm run build)` };
  }
  const fresh: BoundSocket[] = [];
  const fail = (errno: number): { ok: false; code: string; message: string } => {
    for (const socket of fresh) socket.close();
    return failure(errno, config) as { ok: false; code: string; message: string };
  };
  // A socket bound alone (one worker until now) lets the others join it (reuseport.c).
  for (const socket of existing) {
    const fd = descriptorOf(socket);
    if (fd < 0 || allowReuseport(fd) !== 0) {
      return { ok: false, code: 'PP_ERR_WORKERS', message: `cannot add workers to ${where(config)} while it serves (its socket cannot be shared); restart the daemon to apply the new workers count` };
    }
  }
  let port = existing[0]?.port ?? config.listen.port;
  for (let i = existing.length; i < count; i++) {
    // After the first, each binds exactly what the first bound ('' may have become '::' or 0.0.0.0).
    const first = existing[0] ?? fresh[0];
    const bound = bindDescriptor(config.protocol === 'udp', first?.address ?? config.listen.host, port, config.ipv6_only, true);
    if (typeof bound === 'number') return fail(bound);
    if (config.protocol === 'tcp') {
      const listened = listenDescriptor(bound.fd);
      if (listened !== 0) {
        closeDescriptor(bound.fd);
        return fail(listened);
      }
    }
    port = bound.port;
    let open = true;
    const close = (): void => {
      if (open) closeDescriptor(bound.fd);
      open = false;
    };
    fresh.push({ transfer: { kind: 'fd', fd: bound.fd }, address: bound.address, port: bound.port, family: bound.family, close });
  }
  return { ok: true, sockets: [...existing, ...fresh] };
}

/** Makes a group's sockets steer over its first `count` (reuseport.c): 0 or a negative errno. */
export function steerWorkers(sockets: readonly BoundSocket[], count: number): number {
  const fd = descriptorOf(sockets[sockets.length - 1]!);
  return fd < 0 ? -os.constants.errno.EBADF : steerBySource(fd, count);
}

/** Connections or datagrams waiting on a socket that no worker will read any more (reuseport.c). */
export function waitingOn(socket: BoundSocket): number {
  const fd = descriptorOf(socket);
  return fd < 0 ? 0 : Math.max(0, pendingInput(fd));
}

/** The supervisor's descriptor of a socket: its own, or the one inside Node's handle (-1 if none). */
function descriptorOf(socket: BoundSocket): number {
  if (socket.transfer.kind === 'fd') return socket.transfer.fd;
  const fd = (socket.transfer.handle as { fd?: unknown }).fd;
  return typeof fd === 'number' ? fd : -1;
}
