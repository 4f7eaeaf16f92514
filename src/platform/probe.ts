/**
 * A probe says whether one of Node's internals (or our addon) is usable in this process, and if
 * not, why: missing on this Node, denied (process.binding throws ERR_ACCESS_DENIED under
 * --permission), of another shape than the code expects, or turned off by PACKETPONY_PUBLIC_PATH=1.
 * Probes look only: they read properties and ask for bindings, never open a socket, so running them
 * at start costs nothing and changes nothing. Each answer is kept: the process's Node does not change.
 */

export interface Probe {
  /** What was looked at, as the log names it: `process.binding('tcp_wrap')`. */
  readonly name: string;
  readonly usable: boolean;
  /** Why not ('' when usable): "missing on v26.12.1", "denied (ERR_ACCESS_DENIED)", … */
  readonly reason: string;
}

let forced: boolean | undefined;

/**
 * PACKETPONY_PUBLIC_PATH=1: every internal counts as unusable, so the public-API paths run (to test
 * them, or to rule the internals out when something looks wrong). Read once per process.
 */
export function publicPathForced(): boolean {
  forced ??= process.env['PACKETPONY_PUBLIC_PATH'] === '1';
  return forced;
}

export const FORCED_REASON = 'not used (PACKETPONY_PUBLIC_PATH=1)';

export function usable(name: string): Probe {
  return { name, usable: true, reason: '' };
}

export function unusable(name: string, reason: string): Probe {
  return { name, usable: false, reason };
}

/** "missing on v26.12.1" */
export function missing(): string {
  return `missing on Node.js ${process.version}`;
}

/** Why a look at an internal threw: denied by the permission model, or anything else it said. */
export function thrownReason(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === 'ERR_ACCESS_DENIED') return 'denied (ERR_ACCESS_DENIED: the permission model is on)';
  const message = error instanceof Error ? error.message.split('\n')[0] : String(error);
  return `unusable (${typeof code === 'string' ? `${code}: ` : ''}${message})`;
}

/**
 * process.binding(name), or the reason it cannot be had. Deprecated (documentation only up to 22,
 * at run time later) but it still serves the allow-listed bindings net and dgram are built on.
 */
export function legacyBinding(name: string): { binding: Record<string, unknown> } | { reason: string } {
  const binding = (process as unknown as { binding?: (name: string) => Record<string, unknown> }).binding;
  if (typeof binding !== 'function') return { reason: `process.binding is ${missing()}` };
  // process.binding warns once (DEP0111) on the lines that deprecate it at run time; the daemon's
  // stderr is for problems, and the probes say themselves which path is taken.
  const quiet = process.noDeprecation;
  process.noDeprecation = true;
  try {
    const found = binding.call(process, name);
    return typeof found === 'object' && found !== null ? { binding: found } : { reason: `process.binding('${name}') gave no object` };
  } catch (error) {
    return { reason: thrownReason(error) };
  } finally {
    process.noDeprecation = quiet;
  }
}
