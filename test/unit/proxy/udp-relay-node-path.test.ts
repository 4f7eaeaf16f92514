/**
 * The UDP relay's tests on Node's datagram path (src/platform/dgram-internals.ts): the one used where the batched
 * path's addon is not built, or with PACKETPONY_UDP_BATCH=0. Same files, same assertions; the
 * helper is imported first, so the setting is made before their module bodies run.
 */
import '../../helpers/node-udp-path.js';
import './udp-relay.test.js';
import './udp-relay-plans.test.js';
