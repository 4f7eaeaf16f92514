/**
 * The handle an admitted connection or UDP session carries for its whole life. It points straight
 * at its address's state, so metering a chunk needs no lookup by address.
 */
import type { AddressState } from './address-state.js';
import type { LimitReason } from './verdict.js';

// Symbol keys keep the limiter's bookkeeping off the public surface (STYLE.md §2) without
// making every chunk go through an accessor.
export const kState = Symbol('packetpony.policy.state');
export const kLive = Symbol('packetpony.policy.live');

/** An allowing verdict: pass it to the limiter's `consume` per chunk and `release` on close. */
export class Ticket {
  readonly allow: true = true;
  /** The normalised client address. */
  readonly address: string;
  /**
   * With action log_only: a limit this connection broke but was let through for, set at most once
   * per address per window per reason so that every one can be logged without flooding.
   */
  readonly violation: LimitReason | undefined;
  readonly [kState]: AddressState;
  [kLive] = true;

  constructor(address: string, state: AddressState, violation: LimitReason | undefined) {
    this.address = address;
    this[kState] = state;
    this.violation = violation;
  }
}
