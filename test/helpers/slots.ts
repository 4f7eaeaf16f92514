/**
 * At most N tests of a file at once. ava runs a file's tests concurrently; a file whose every test
 * starts a daemon (two processes or more) would otherwise start them all together and, on a small
 * machine, starve each other past their deadlines. A test takes a slot before starting anything and
 * gives it back when it ends, whatever the outcome.
 */
import type { ExecutionContext } from 'ava';

export function slots(size: number): (t: ExecutionContext) => Promise<void> {
  let free = size;
  const waiting: Array<() => void> = [];
  const release = (): void => {
    const next = waiting.shift();
    if (next) next();
    else free++;
  };
  return async (t) => {
    if (free > 0) free--;
    else await new Promise<void>((resolve) => waiting.push(resolve));
    t.teardown(release);
  };
}
