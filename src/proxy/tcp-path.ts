/**
 * Which TcpEnd implementation this process relays on (src/platform/tcp-end.ts), chosen once: node's native
 * handles where their probe says they are usable, net.Socket otherwise (and with
 * PACKETPONY_PUBLIC_PATH=1).
 */
import { nativeTcpEnds, probeTcpWrap } from '../platform/index.js';
import { socketEnds } from './socket-end.js';
import type { TcpEnds } from '../platform/tcp-end.js';

let chosen: TcpEnds | undefined;

export function tcpEnds(): TcpEnds {
  chosen ??= probeTcpWrap().usable ? nativeTcpEnds : socketEnds;
  return chosen;
}
