/**
 * The TCP relay's read buffers: a small one per direction for the whole connection, and a large one
 * lent while the direction moves bulk data (relay-flow.ts decides when). All kinds are recycled.
 *
 * Why two sizes: a read buffer is resident memory once written into. Most connections through a
 * forwarder are idle or chatty most of the time; with a large buffer per direction for its whole
 * life, a connection that had once moved bulk data kept it resident while it idled. Now it holds a
 * large one only while reads fill its small buffer, and gives it back after a run of short reads.
 * Small buffers are slices of shared 64 KiB slabs, so the first reads of idle connections touch a
 * page between them rather than one each (a small saving per idle connection; most of the rest
 * was V8's young generation, see child-process.ts).
 *
 * Why a large buffer is 1 MiB (BULK_SIZE): a bulk transfer costs a read and a send per buffer, and
 * on loopback each system call moves up to a whole buffer, so the benchmark's one-stream TCP rows
 * cost less CPU per MB with each step from 64 KiB to 256 KiB to 1 MiB. Its pages are touched only
 * as far as reads reach, so a chatty connection that grew one holds little of it; and bulk buffers are
 * lent from a budget per process (MAX_BULK_LENT): past it, directions that grow get LARGE_SIZE
 * (64 KiB) buffers, so many bulk connections at once cannot hold more than that budget plus 64 KiB
 * each. A read is metered as one chunk, so a relay under a small bandwidth cap with action drop
 * asks for LARGE_SIZE only (bulkReadsUnder).
 *
 * Why pooled: at a few thousand new connections per second, allocating fresh buffers per
 * connection was a measurable share of the child's CPU on its own, plus the garbage collections
 * that much external memory churn triggers, and the page faults of touching fresh memory.
 *
 * The figures behind these three choices: docs/performance.md, "Measurements behind the code".
 */

import type { RateLimits } from '../config/types.js';

/** A large buffer while the bulk budget lasts: the most one read takes. */
export const BULK_SIZE = 1024 * 1024;
/** A large buffer once the bulk budget is spent. */
export const LARGE_SIZE = 64 * 1024;
/** Each direction's own buffer: the most one read takes until a read fills it. */
export const SMALL_SIZE = 2 * 1024;
/** Bulk buffers lent at once in this process (32 MiB: 16 connections moving bulk both ways). */
export const MAX_BULK_LENT = 32;

/**
 * Whether relays under these limits may read BULK_SIZE at a time. The bandwidth meter sees one read
 * as one chunk, and `drop` cuts the connection before a chunk that would pass the cap: with 1 MiB
 * chunks, a 1 MB cap was cut at 223 KB. So unless the cap is at least 16 bulk reads per window,
 * reads stay within LARGE_SIZE, as they always were. `throttle` needs no such rule: its reads are
 * sized by the pace and by what is left of the cap (the relay's readLimit).
 */
export function bulkReadsUnder(limits: RateLimits): boolean {
  const cap = limits.max_bandwidth_per_ip;
  if (cap === 0 || limits.action !== 'drop') return true;
  return cap >= 16 * BULK_SIZE;
}

const SLAB_SIZE = 64 * 1024;
/** Idle bulk buffers kept (4 MiB). */
const MAX_POOLED_BULK = 4;
/** Idle 64 KiB buffers kept (4 MiB): enough to absorb bursts of connections moving bulk data. */
const MAX_POOLED_LARGE = 64;
/** Idle small buffers kept (4 MiB): what a burst of a few thousand closed connections leaves. */
const MAX_POOLED_SMALL = 2048;

const bulkPool: Buffer[] = [];
let bulkLent = 0;
const large: Buffer[] = [];
const small: Buffer[] = [];
let slab: Buffer | null = null;
let slabOffset = 0;

/** A large buffer: BULK_SIZE bytes if `bulk` and while the budget lasts, LARGE_SIZE otherwise. */
export function takeLarge(bulk: boolean): Buffer {
  if (bulk && bulkLent < MAX_BULK_LENT) {
    bulkLent++;
    return bulkPool.pop() ?? Buffer.allocUnsafeSlow(BULK_SIZE);
  }
  return large.pop() ?? Buffer.allocUnsafeSlow(LARGE_SIZE);
}

/**
 * Gives a large buffer back. Only once nothing can still use it: no read may land in it and no
 * pending write may point into it.
 */
export function giveLarge(buffer: Buffer): void {
  if (buffer.length === BULK_SIZE) {
    bulkLent--;
    if (bulkPool.length < MAX_POOLED_BULK) bulkPool.push(buffer);
  } else if (large.length < MAX_POOLED_LARGE) {
    large.push(buffer);
  }
}

/** A SMALL_SIZE buffer, a slice of a shared slab. */
export function takeSmall(): Buffer {
  const pooled = small.pop();
  if (pooled !== undefined) return pooled;
  if (slab === null || slabOffset === SLAB_SIZE) {
    slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
    slabOffset = 0;
  }
  const buffer = slab.subarray(slabOffset, slabOffset + SMALL_SIZE);
  slabOffset += SMALL_SIZE;
  return buffer;
}

/** Gives a small buffer back, under the same condition as giveLarge(). */
export function giveSmall(buffer: Buffer): void {
  if (buffer.length === SMALL_SIZE && small.length < MAX_POOLED_SMALL) small.push(buffer);
}

/** Idle buffers in the pools, and bulk buffers lent (for tests). */
export function pooledBuffers(): { bulk: number; large: number; small: number; bulkLent: number } {
  return { bulk: bulkPool.length, large: large.length, small: small.length, bulkLent };
}
