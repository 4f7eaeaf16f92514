/**
 * The TCP relay's read buffers: a small one per direction for the whole connection, and a large one
 * lent while the direction moves bulk data (relay-flow.ts decides when). Both kinds are recycled.
 *
 * Why two sizes: a read buffer is resident memory once written into. Most connections through a
 * forwarder are idle or chatty most of the time; with a 64 KiB buffer per direction for its whole
 * life, a connection that had once moved bulk data kept up to 128 KiB resident while it idled. Now
 * it holds 64 KiB only while reads fill its small buffer, and gives it back after a run of short
 * reads. Small buffers are slices of shared 64 KiB slabs, so the first reads of idle connections
 * touch a page between them rather than one each (measured: 20.0 → 19.4 KB per idle connection,
 * within the noise; most of the rest was V8's young generation, see child-process.ts).
 *
 * Why pooled: profiled at a few thousand new connections per second, allocating fresh buffers per
 * connection cost ~4 % of the child's CPU on its own, plus the garbage collections that much
 * external memory churn triggers, and the page faults of touching fresh memory.
 */

/** The default large read buffer size, the most one read takes. */
export const LARGE_SIZE = 64 * 1024;
/** Each direction's own buffer: the most one read takes until a read fills it. */
export const SMALL_SIZE = 2 * 1024;

const SLAB_SIZE = 64 * 1024;
/** Idle large buffers kept (4 MiB): enough to absorb bursts of connections moving bulk data. */
const MAX_POOLED_LARGE = 64;
/** Idle small buffers kept (4 MiB): what a burst of a few thousand closed connections leaves. */
const MAX_POOLED_SMALL = 2048;

const large: Buffer[] = [];
const small: Buffer[] = [];
let slab: Buffer | null = null;
let slabOffset = 0;

/** A large buffer: `size` bytes, pooled when it is LARGE_SIZE. */
export function takeLarge(size: number): Buffer {
  if (size === LARGE_SIZE) {
    const pooled = large.pop();
    if (pooled !== undefined) return pooled;
  }
  return Buffer.allocUnsafeSlow(size);
}

/**
 * Gives a large buffer back. Only once nothing can still use it: no read may land in it and no
 * pending write may point into it.
 */
export function giveLarge(buffer: Buffer): void {
  if (buffer.length === LARGE_SIZE && large.length < MAX_POOLED_LARGE) large.push(buffer);
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

/** Idle buffers in the pools (for tests). */
export function pooledBuffers(): { large: number; small: number } {
  return { large: large.length, small: small.length };
}
