/**
 * The child's clock for the policy (the rate limiter's windows and pauses): milliseconds, never
 * going back, read on every metered chunk or datagram and every admission.
 *
 * Why not performance.now(): with a bandwidth limit set, the rate limiter reads the clock once per
 * chunk relayed, and performance.now() costs ~590 instructions (a clock_gettime and a trip through
 * C++; counted with callgrind), as much as the rest of what features add per chunk together. The
 * event loop already keeps the time: libuv stamps it at the start of each turn and right after each
 * poll returns, i.e. just before the callbacks of the data that poll found. The addon hands over
 * that stamp's memory (loopTime() in src/native/process_calls.c), and reading it is two array loads.
 *
 * What it means for the readers: time moves in whole milliseconds and stands still within a turn
 * of the loop (a sliding window's buckets are a twentieth of its window, a pause is whole
 * milliseconds: neither needs more). Only differences between readings matter, and the origin is
 * not performance.now()'s.
 *
 * Without the addon (not Linux, no compiler at install), performance.now().
 */
import type { Clock } from '../policy/rate-limiter.js';
import { nativeAddon } from '../native/addon.js';

const TWO_TO_32 = 4_294_967_296;
let shared: Clock | undefined;
let native = false;

/** The loop's clock where the addon gives it, else performance.now(). One per process. */
export function loopClock(): Clock {
  if (shared === undefined) {
    const stamp = loopStamp();
    native = stamp !== undefined;
    shared = stamp ?? (() => performance.now());
  }
  return shared;
}

/** Whether loopClock() reads the loop's own time. */
export function loopClockIsNative(): boolean {
  loopClock();
  return native;
}

function loopStamp(): Clock | undefined {
  const buffer = nativeAddon()?.loopTime();
  const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  if (buffer === undefined || buffer.byteLength !== 8 || !littleEndian) return undefined;
  // A 64-bit integer, read as two 32-bit words, low first.
  const words = new Uint32Array(buffer);
  return () => words[0]! + words[1]! * TWO_TO_32;
}
