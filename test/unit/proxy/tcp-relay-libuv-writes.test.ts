/**
 * The TCP relay's and its ends' tests with every chunk written through Node's writeBuffer: the path
 * used where the addon is not built, or with PACKETPONY_TCP_SEND_NOW=0. Same files, same
 * assertions; the helper is imported first, so the setting is made before any writer exists.
 */
import '../../helpers/libuv-tcp-writes.js';
import './tcp-handle.test.js';
import './tcp-relay.test.js';
import './tcp-relay-targets.test.js';
