/**
 * Imported first by a test file: the TCP relay tests imported after it write through Node's
 * writeBuffer only, as a child does with PACKETPONY_TCP_SEND_NOW=0 (its listener passes the switch
 * on the same way, before any end exists).
 */
import { allowTcpAddon } from '../../src/platform/tcp-reads.js';

allowTcpAddon(false);
