/**
 * What the caller of a TCP relay (tcp-relay.ts, whose header says the rules) gives it and gets
 * back: the options, the relay's handle, and what onOpen and onClose are told.
 */
import type { Endpoint, TcpSettings } from '../config/types.js';
import type { TcpEnd } from '../platform/tcp-end.js';
import type { ErrorType, ListenerStats } from '../telemetry/stats.js';
import type { Meter, ReadLimit } from './relay-flow.js';
import type { TargetResolver } from './target-resolver.js';

/** How a relay ended. */
export type CloseCause =
  /** Both directions ended with a FIN and were passed on. */
  | 'complete'
  /** The target could not be resolved or connected; the client was reset. */
  | 'dial_failed'
  /** A socket error or reset on either side. */
  | 'error'
  /** read_timeout, write_timeout or idle_timeout. */
  | 'timeout'
  /** The meter returned METER_DROP. */
  | 'dropped'
  /** destroy() was called. */
  | 'destroyed';

export interface RelayOpenInfo {
  /** The address actually dialed (a resolved name's address). */
  readonly target_ip: string;
  readonly target_port: number;
  readonly family: 4 | 6;
}

export interface RelayCloseInfo {
  readonly cause: CloseCause;
  /** Whether the target connection was established (onOpen was called). */
  readonly opened: boolean;
  /** Client → target. */
  readonly bytes_sent: number;
  /** Target → client. */
  readonly bytes_received: number;
  /** From startTcpRelay() to both sockets closed. */
  readonly duration_ms: number;
  /** '' when no address was dialed (the name did not resolve). */
  readonly target_ip: string;
  readonly target_port: number;
  /** Human reason, for the close event's `error` field; absent for 'complete'. */
  readonly error?: string;
  /** Counted in stats.error() by the relay; absent for 'complete', 'dropped' and 'destroyed'. */
  readonly error_type?: ErrorType;
}

export interface TcpRelayOptions<C = undefined> {
  /** The accepted client connection, not reading. */
  readonly client: TcpEnd;
  /** Bytes already read from the client (after a PROXY header): forwarded first. */
  readonly early?: Buffer[];
  readonly target: Endpoint;
  readonly tcp: TcpSettings;
  readonly stats: ListenerStats;
  /** Anything the caller wants back in its callbacks (addresses, a policy ticket…). */
  readonly context?: C;
  readonly meter?: Meter;
  /**
   * How much the next read of either direction may take, asked after each read (a throttled
   * connection's reads follow its pace: see streamReadLimit in policy/address-state.ts). Absent:
   * reads take what the buffer holds.
   */
  readonly readLimit?: ReadLimit;
  readonly onOpen?: (relay: TcpRelay<C>, info: RelayOpenInfo) => void;
  readonly onClose: (relay: TcpRelay<C>, info: RelayCloseInfo) => void;
  /** Defaults to the process-wide cache. */
  readonly resolver?: TargetResolver;
  /**
   * Several targets: the current target could not be connected, for `reason`. Returns the next
   * target to try, or undefined to give up (the dial fails as usual).
   */
  readonly failover?: (relay: TcpRelay<C>, reason: string) => Endpoint | undefined;
  /** With `failover`: how long one target may take (0 = only connect_timeout bounds it). */
  readonly attemptTimeoutMs?: number;
  /** Written to the target first, once connected (a PROXY protocol header). */
  readonly header?: Buffer;
  /**
   * Reads that fill the small buffer may go on in a 1 MiB one (default), or only in a 64 KiB one:
   * each read is one chunk for the meter (read-buffers.ts).
   */
  readonly bulkReads?: boolean;
  /** TCP keepalive idle time in ms on both sockets; default 60 s; 0 turns keepalive off. */
  readonly keepAliveMs?: number;
  /**
   * The client connection already has TCP_NODELAY and keepalive, inherited from the listening
   * socket (presetAcceptedOptions in src/platform/native-tcp-path.ts).
   */
  readonly clientPreset?: boolean;
}

/** The handle of one relay. */
export interface TcpRelay<C = undefined> {
  readonly client: TcpEnd;
  readonly context: C;
  /** Date.now() when the relay started. */
  readonly startedAt: number;
  /** Client → target bytes so far. */
  readonly bytesSent: number;
  /** Target → client bytes so far. */
  readonly bytesReceived: number;
  /** The address being dialed or connected; '' before resolution. */
  readonly targetIp: string;
  readonly targetPort: number;
  /** Connected to the target and not closing. */
  readonly open: boolean;
  /** Bytes held in user space: the sockets' unwritten data plus data read but not yet forwarded. */
  readonly bufferedBytes: number;
  /** Ends both sockets with a reset (idempotent). onClose follows with cause 'destroyed'. */
  destroy(reason?: string): void;
}
