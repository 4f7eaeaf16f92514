/**
 * Every use of Node's internals, and the probes that say at start whether each is usable here.
 *
 * PacketPony leans on a few of Node's undocumented parts, for speed (the TCP relay on native
 * handles, the UDP relay straight on dgram's handles) or for what no public API does (a bound
 * socket nobody reads: socket-helpers.ts). Each lives in this folder only, behind a probe
 * (probe.ts) that answers without side effects that matter; every user has a path over public
 * APIs for when the probe says no: the internal is gone on this Node line, denied under
 * --permission, or ruled out with PACKETPONY_PUBLIC_PATH=1. The addon's batched TCP reads
 * (tcp-reads.ts) live here too: they read descriptors that libuv owns under the native handles.
 *
 * The relay's contract with its TCP ends (tcp-end.ts) is here too, so that this folder imports only
 * node: modules and src/native (our addon's loader); proxy/ and supervisor/ import it.
 */
export { FORCED_REASON, publicPathForced, type Probe } from './probe.js';
export { bindTcpHandle, bindUdpHandle, probeServerHandleHelper, probeSocketHandleHelper, type NativeHandle } from './socket-helpers.js';
export { bindDescriptor, closeDescriptor, probeAddonSockets, type BoundDescriptor } from './addon-sockets.js';
export { allowReuseport, LISTEN_BACKLOG, listenDescriptor, pendingInput, probeReuseportSteering, steerBySource, workerForAddress } from './reuseport.js';
export { probeTcpWrap } from './tcp-wrap.js';
export { nativeTcpEnds } from './native-tcp-path.js';
export {
  datagramSender, interceptDatagrams, pauseReading, probeDgramHandle, probeUdpSendWrap, resumeReading, takeOverReading, type DatagramSender,
} from './dgram-internals.js';
