/** The environment's path switches as the child reads them at start: only "0" turns a path off. */
import test from 'ava';
import { pathSwitchesFrom } from '../../../src/child/path-switches.js';

test('unset or anything but "0": every path on', (t) => {
  t.deepEqual(pathSwitchesFrom({}), { udpBatch: true, tcpAddon: true });
  t.deepEqual(pathSwitchesFrom({ PACKETPONY_UDP_BATCH: '1', PACKETPONY_TCP_SEND_NOW: '' }), { udpBatch: true, tcpAddon: true });
});

test('PACKETPONY_UDP_BATCH=0 and PACKETPONY_TCP_SEND_NOW=0 each turn their own path off', (t) => {
  t.deepEqual(pathSwitchesFrom({ PACKETPONY_UDP_BATCH: '0' }), { udpBatch: false, tcpAddon: true });
  t.deepEqual(pathSwitchesFrom({ PACKETPONY_TCP_SEND_NOW: '0' }), { udpBatch: true, tcpAddon: false });
});
