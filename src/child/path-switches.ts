/**
 * The environment's path switches (src/proxy/path-switches.ts), read once when the child starts
 * and handed to its listener. The supervisor starts children with its own environment, so the
 * switches an administrator sets on the daemon apply to every listener.
 */
import type { PathSwitches } from '../proxy/path-switches.js';

export function pathSwitchesFrom(env: NodeJS.ProcessEnv): PathSwitches {
  return Object.freeze({
    udpBatch: env['PACKETPONY_UDP_BATCH'] !== '0',
    tcpAddon: env['PACKETPONY_TCP_SEND_NOW'] !== '0',
  });
}
