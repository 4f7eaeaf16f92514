/**
 * The administrator's switches from a fast path to Node's own, for when something looks wrong or
 * to compare. They come from the environment, read once when a child starts
 * (src/child/path-switches.ts), and reach the data path as options: nothing below the listeners
 * reads process.env.
 */

export interface PathSwitches {
  /** PACKETPONY_UDP_BATCH=0 turns it off: UDP through Node's dgram sockets (udp-node-path.ts). */
  readonly udpBatch: boolean;
  /**
   * PACKETPONY_TCP_SEND_NOW=0 turns it off: the addon's batched reads and direct sends stay
   * unused, and every TCP read and write goes through Node's own calls.
   */
  readonly tcpAddon: boolean;
}

/** Nothing turned off: what an environment without the switches means. */
export const ALL_PATHS_ON: PathSwitches = Object.freeze({ udpBatch: true, tcpAddon: true });

/** Why UDP is on Node's path when `udpBatch` is off, as the start-up log says it. */
export const UDP_BATCH_OFF_REASON = 'turned off by PACKETPONY_UDP_BATCH=0';
