/**
 * Which files of the drop-in folder are listeners. The rules follow xinetd and systemd: only
 * `*.yaml` and `*.yml`, never editor or package-manager leftovers, read in name order.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const IGNORED_SUFFIXES = ['~', '.swp', '.swo', '.bak', '.rpmnew', '.rpmsave', '.rpmorig', '.tmp'];

/** Whether a file name in conf.d holds a listener. Also used by the watcher to ignore noise. */
export function isDropInName(name: string): boolean {
  if (name.startsWith('.')) return false;
  if (IGNORED_SUFFIXES.some((suffix) => name.endsWith(suffix))) return false;
  if (name.includes('.dpkg-')) return false;
  return name.endsWith('.yaml') || name.endsWith('.yml');
}

/** The listener name a file gives by default: its name without the extension. */
export function stemOf(name: string): string {
  return name.replace(/\.ya?ml$/, '');
}

export type DropInListing =
  | { kind: 'ok'; files: string[] }
  | { kind: 'missing' }
  | { kind: 'unreadable'; reason: string };

/** The absolute paths of the listener files in `dir`, in name order (byte order, as `LC_ALL=C ls`). */
export function listDropIns(dir: string): DropInListing {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (error) {
    const err = error as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') return { kind: 'missing' };
    if (err.code === 'ENOTDIR') return { kind: 'unreadable', reason: 'is not a folder' };
    return { kind: 'unreadable', reason: err.code === 'EACCES' ? 'permission denied' : err.message };
  }
  const files = names
    .filter(isDropInName)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    .map((name) => join(dir, name))
    .filter((path) => {
      try {
        return statSync(path).isFile(); // follows symlinks, as an admin linking files in expects
      } catch {
        return false; // a dangling symlink is not a listener
      }
    });
  return { kind: 'ok', files };
}
