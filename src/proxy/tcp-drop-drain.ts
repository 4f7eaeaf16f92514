/**
 * The wait between the meter's drop and the TCP relay's reset. A reset throws away the socket's
 * send queue, and what was relayed before the cut was counted against the address's allowance:
 * resetting at once lost a large part of it (docs/performance.md, "Measurements behind the
 * code"). So the relay stops reading both sides, waits until both sockets' queues (libuv's and
 * the kernel's, SIOCOUTQ through the addon) are empty, and then resets: the peer has every byte
 * in its own kernel and reads them before it meets the reset. The wait is bounded (DRAIN_DEADLINE_MS): a peer that does
 * not read is reset then, and the relay takes the bytes it never got off the counts (close event
 * and metrics say what was delivered). Without the addon the kernel's queue cannot be seen: the
 * wait is for libuv's, then UNSEEN_QUEUE_GRACE_MS, and the close event says delivery is
 * unconfirmed.
 */
import type { TcpEnd } from '../platform/tcp-end.js';

/** The most a connection cut by the meter waits for its queues to drain before it resets. */
export const DRAIN_DEADLINE_MS = 2_000;
/** How often a draining connection looks at its queues. */
const DRAIN_POLL_MS = 5;
/** Without the addon: the wait after libuv's queue drained, for the kernel's (unseen) to follow. */
export const UNSEEN_QUEUE_GRACE_MS = 200;

/** What the drain needs from its relay. */
export interface DrainOwner {
  readonly client: TcpEnd;
  readonly target: TcpEnd | null;
  /** The queues are empty, or the deadline passed: reset now. */
  drained(): void;
}

export class DropDrain {
  readonly #owner: DrainOwner;
  readonly #deadline = performance.now() + DRAIN_DEADLINE_MS;
  /** Since when libuv's queues are empty while the kernel's cannot be seen (-1: not yet). */
  #unseenSince = -1;
  #timer: NodeJS.Timeout | null = null;

  constructor(owner: DrainOwner) {
    this.#owner = owner;
  }

  /** The first look, now (drained() may come before this returns). */
  start(): void {
    this.#poll();
  }

  stop(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** One look at the queues: done once they are empty or the deadline passed. */
  readonly #poll = (): void => {
    this.#timer = null;
    const owner = this.#owner;
    const toClient = queuedBytes(owner.client);
    const toTarget = queuedBytes(owner.target);
    const now = performance.now();
    let done = toClient === 0 && toTarget === 0;
    if (!done && toClient <= 0 && toTarget <= 0) {
      // Only the kernel's queue is left, and it cannot be seen: give it a moment.
      if (this.#unseenSince < 0) this.#unseenSince = now;
      done = now - this.#unseenSince >= UNSEEN_QUEUE_GRACE_MS;
    }
    if (done || now >= this.#deadline) {
      owner.drained();
      return;
    }
    this.#timer = setTimeout(this.#poll, DRAIN_POLL_MS);
  };
}

/**
 * What an end still has to send: libuv's queue plus the kernel's unacknowledged bytes. 0 once the
 * end is closed (nothing more can leave); -1 when libuv's queue is empty but the kernel's cannot be
 * seen (no addon).
 */
export function queuedBytes(end: TcpEnd | null): number {
  if (end === null || end.destroyed) return 0;
  const kernel = end.unsentBytes();
  const libuv = end.pendingWriteBytes;
  if (kernel < 0) return libuv > 0 ? libuv : -1;
  return libuv + kernel;
}
