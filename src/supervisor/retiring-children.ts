/**
 * The bookkeeping of one listener's (or worker's) children beyond the one serving: those that
 * were replaced or told to drain and still finish their connections, and what the listener's
 * connection total holds for each child.
 *
 * - A retired child gets its deadline (then SIGKILL); one that was not handed over is told to
 *   drain. A handed-over child's closing connections free their per-address slots where its
 *   state went: the release callback says where (the serving child, or every worker of a group).
 *   Once no handed-over child is left, one last release says nothing inherited can still be open.
 * - Slots: a child that counts on a group's shared total has a slot on it, given back (with what
 *   it held) when the child exits. A child that counted alone and handed over to a group (a reload
 *   from one worker to several) has its open connections carried on the group's total, on a slot
 *   held for it, one fewer at each of its closes, until it exits.
 */
import type { LimiterSnapshot, ReleaseMessage, ReportMessage } from '../ipc/protocol.js';
import { decodeEvent } from '../ipc/wire-events.js';
import type { ChildProcessHandle } from './child-process.js';
import type { TotalSlots } from './listener-child.js';

/** After a drain deadline, how long a child gets to exit before it is killed. */
const KILL_GRACE_MS = 3_000;

interface Slot {
  readonly total: TotalSlots;
  readonly slot: number;
}

interface Carried extends Slot {
  /** Connections still carried (closes seen take one each). */
  left: number;
}

/** Connections open in the process a snapshot was taken of. */
function openConnectionsIn(snapshot: LimiterSnapshot): number {
  let open = Number(snapshot.untracked_open) || 0;
  for (const entry of snapshot.addresses) open += Number(entry.open) || 0;
  return open;
}

export class RetiringChildren {
  readonly #release: (message: ReleaseMessage) => void;
  /** Children handed over or told to drain, finishing their connections. */
  readonly #retiring = new Set<ChildProcessHandle>();
  /**
   * Children that handed their limiter state on (directly or down a chain of reloads) and still
   * finish connections: each of their closing connections frees a slot where that state went.
   */
  readonly #handedOver = new Set<ChildProcessHandle>();
  readonly #slots = new Map<ChildProcessHandle, Slot>();
  readonly #carried = new Map<ChildProcessHandle, Carried>();

  constructor(release: (message: ReleaseMessage) => void) {
    this.#release = release;
  }

  /** The children finishing connections. */
  get children(): ReadonlySet<ChildProcessHandle> {
    return this.#retiring;
  }

  /** Whether handed-over children still finish connections whose slots they hold. */
  get inheriting(): boolean {
    return this.#handedOver.size > 0;
  }

  /** A slot on `total` for a new child (-1: no total, or none free: the child counts alone). */
  takeSlot(child: ChildProcessHandle, total: TotalSlots | null): number {
    if (total === null) return -1;
    const slot = total.take();
    if (slot >= 0) this.#slots.set(child, { total, slot });
    return slot;
  }

  /** Lets a child finish its connections (deadline, then killed) without waiting for it. */
  retire(child: ChildProcessHandle, deadlineMs: number, handover: boolean): void {
    this.#retiring.add(child);
    const kill = setTimeout(() => child.kill('SIGKILL'), deadlineMs + KILL_GRACE_MS);
    void child.exited.then(() => clearTimeout(kill));
    if (!handover) child.send({ type: 'pp:drain', deadline_ms: deadlineMs }).catch(() => child.kill('SIGTERM'));
  }

  /**
   * `child` handed its state over (and was retired): its closes free slots from now on. With
   * `total` (the successors count on a group's shared total) and a child that counted alone, its
   * open connections, from `snapshot`, go on that total until they close, so
   * max_total_connections holds for the whole listener meanwhile.
   */
  handedOver(child: ChildProcessHandle, total: TotalSlots | undefined, snapshot: LimiterSnapshot | null): void {
    if (!child.alive) return;
    this.#handedOver.add(child);
    if (total === undefined || snapshot === null || this.#slots.has(child)) return;
    const open = openConnectionsIn(snapshot);
    if (open <= 0) return;
    const slot = total.take();
    if (slot < 0) return;
    for (let i = 0; i < open; i++) total.charge(slot);
    this.#carried.set(child, { total, slot, left: open });
  }

  /** A report of `child`: a handed-over child's closed connections free their slots. */
  report(child: ChildProcessHandle, report: ReportMessage): void {
    if (!this.#handedOver.has(child)) return;
    const addresses: string[] = [];
    for (const entry of report.events) {
      const event = decodeEvent(entry, report);
      if (event.kind === 'connection' && (event.event_type === 'close' || event.event_type === 'error')) addresses.push(event.source_ip);
    }
    if (addresses.length === 0) return;
    const carried = this.#carried.get(child);
    if (carried !== undefined) {
      const closed = Math.min(carried.left, addresses.length);
      for (let i = 0; i < closed; i++) carried.total.discharge(carried.slot);
      carried.left -= closed;
    }
    this.#release({ type: 'pp:release', addresses, all: false });
  }

  /**
   * `child` exited: what its slots held comes off the total (a crash leaves no connection behind).
   * True when it was a retiring child, which is then forgotten; false for any other.
   */
  exited(child: ChildProcessHandle): boolean {
    for (const slots of [this.#slots, this.#carried]) {
      const held = slots.get(child);
      if (held === undefined) continue;
      slots.delete(child);
      held.total.give(held.slot);
    }
    if (!this.#retiring.delete(child)) return false;
    // Once no earlier child is left, nothing inherited can still be open (a safety net for close
    // events that never arrived).
    if (this.#handedOver.delete(child) && this.#handedOver.size === 0) this.#release({ type: 'pp:release', addresses: [], all: true });
    return true;
  }
}
