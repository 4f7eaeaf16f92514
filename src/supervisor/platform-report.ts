/**
 * What this Node gives PacketPony, said once at start: for each protocol in use, how the
 * supervisor owns the sockets (socket-owner.ts) and what the children relay on. The children run
 * the same Node with the same flags and environment, so the probes answer here as they do there
 * (src/platform/). A relay on public APIs because an internal is missing or denied is a warning:
 * it behaves the same, at a cost in CPU; chosen with PACKETPONY_PUBLIC_PATH=1, it is a plain line.
 */
import { probeDgramHandle, probeTcpWrap, probeUdpSendWrap, publicPathForced, type Probe } from '../platform/index.js';
import type { Logger } from '../telemetry/logger.js';
import { ownershipPath } from './socket-owner.js';

export interface ProtocolPath {
  /** For the "listener NAME up" line: relay=… */
  readonly relay: string;
  /** socket=…: node-helper, addon-descriptor or none. */
  readonly socket: string;
  /** The sentence of the summary line. */
  readonly text: string;
  /** Set when the relay is on public APIs: the probe that said no. */
  readonly fallback: Probe | null;
}

function socketText(protocol: 'tcp' | 'udp'): { socket: string; text: string } {
  const choice = ownershipPath(protocol);
  const [helper, addon] = choice.probes;
  if (choice.path === 'node-helper') return { socket: 'node-helper', text: `sockets bound with ${helper!.name}` };
  if (choice.path === 'addon-descriptor') {
    return { socket: 'addon-descriptor', text: `sockets bound by the addon and inherited by the children (${helper!.name}: ${helper!.reason})` };
  }
  return { socket: 'none', text: `no way to own sockets (${helper!.name}: ${helper!.reason}; ${addon!.name}: ${addon!.reason})` };
}

/** The paths of one protocol in this process. */
export function protocolPath(protocol: 'tcp' | 'udp'): ProtocolPath {
  const { socket, text: sockets } = socketText(protocol);
  if (protocol === 'tcp') {
    const probe = probeTcpWrap();
    return probe.usable
      ? { relay: 'native-handles', socket, text: `TCP relays on node's native TCP handles, ${sockets}`, fallback: null }
      : { relay: 'net.Socket', socket, text: `TCP relays over net.Socket (public API), ${sockets}`, fallback: probe };
  }
  const handle = probeDgramHandle();
  const send = probeUdpSendWrap();
  if (!handle.usable) return { relay: 'dgram', socket, text: `UDP relays over dgram (public API), ${sockets}`, fallback: handle };
  // Without udp_wrap's SendWrap only sends go through dgram's send(); reading stays on the handle.
  const relay = send.usable ? 'dgram-handles' : 'dgram-handles+dgram-send';
  return { relay, socket, text: `UDP relays on dgram's native handles${send.usable ? '' : ` (sends through dgram: ${send.name} ${send.reason})`}, ${sockets}`, fallback: null };
}

/** The start-up lines: one summary, and a warning per relay on public APIs for want of an internal. */
export function reportPlatform(logger: Logger, protocols: ReadonlySet<'tcp' | 'udp'>): void {
  const paths = (['tcp', 'udp'] as const).filter((p) => protocols.has(p)).map((p) => protocolPath(p));
  if (paths.length === 0) return;
  const forced = publicPathForced() ? '; PACKETPONY_PUBLIC_PATH=1: public APIs wherever there is a choice' : '';
  logger.info(`Node.js ${process.version}: ${paths.map((p) => p.text).join('; ')}${forced}`);
  if (publicPathForced()) return;
  for (const path of paths) {
    if (path.fallback === null) continue;
    const what = path.relay === 'net.Socket' ? 'TCP connections are relayed over net.Socket' : 'UDP datagrams are relayed through dgram';
    logger.warn(`${path.fallback.name} is ${path.fallback.reason}: ${what} (public API): the same behaviour, at more CPU per connection and per chunk`);
  }
}
