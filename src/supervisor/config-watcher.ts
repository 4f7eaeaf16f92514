/**
 * Watches the main file and the drop-in folder and asks for a reload when something that matters
 * changed. Editors save by writing a temporary file and renaming it over the original, and a
 * deployment tool may drop several files at once: a burst of events becomes one reload, after the
 * folder has been quiet for `debounceMs`. Names that are not listeners (dotfiles, `*~`, `*.swp`, …,
 * see conf-dir.ts) never trigger anything.
 */
import { watch as watchFolder, type FSWatcher as FolderWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import { isDropInName } from '../config/conf-dir.js';

export const DEFAULT_DEBOUNCE_MS = 300;

export class ConfigWatcher {
  readonly #configFile: string;
  readonly #onChange: (reason: string) => void;
  readonly #debounceMs: number;
  #confDir: string;
  #watcher: FSWatcher | undefined;
  #mainWatcher: FolderWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #reasons: string[] = [];

  constructor(configFile: string, confDir: string, onChange: (reason: string) => void, debounceMs = DEFAULT_DEBOUNCE_MS) {
    this.#configFile = resolve(configFile);
    this.#confDir = resolve(confDir);
    this.#onChange = onChange;
    this.#debounceMs = debounceMs;
  }

  /** Resolves once the watcher is in place (its initial scan done). */
  start(): Promise<void> {
    const confDir = this.#confDir;
    const configFile = this.#configFile;
    // The main file through its folder (an editor's rename-over would end a watch on the file), but
    // with a plain fs.watch filtered by name rather than chokidar: chokidar re-reads a watched
    // folder on every event in it, so a busy file there (a log kept next to packetpony.yaml) cost
    // the supervisor a readdir and an lstat per write.
    const mainName = basename(configFile);
    try {
      this.#mainWatcher = watchFolder(dirname(configFile), (event, name) => {
        if (name === null || name === mainName) this.#changed(`${event} ${configFile}`);
      });
      // The folder removed, inotify limits: never fatal, SIGHUP still works.
      this.#mainWatcher.on('error', () => {});
    } catch {
      this.#mainWatcher = undefined;
    }
    const watcher = watch(confDir, {
      ignoreInitial: true,
      depth: 0,
      // Only listener files matter; the folder itself must stay watched.
      ignored: (path: string) => {
        const full = resolve(path);
        if (full === confDir) return false;
        return dirname(full) !== confDir || !isDropInName(basename(full));
      },
    });
    this.#watcher = watcher;
    for (const event of ['add', 'change', 'unlink'] as const) {
      watcher.on(event, (path: string) => this.#changed(`${event} ${path}`));
    }
    // A watcher error (folder removed, inotify limit) must not take the daemon down; SIGHUP still works.
    watcher.on('error', () => {});
    return new Promise((resolveReady) => watcher.once('ready', () => resolveReady()));
  }

  #changed(reason: string): void {
    this.#reasons.push(reason);
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      const reasons = this.#reasons;
      this.#reasons = [];
      this.#onChange(reasons.length === 1 ? reasons[0]! : `${reasons.length} changes (${reasons.slice(0, 3).join(', ')}${reasons.length > 3 ? ', …' : ''})`);
    }, this.#debounceMs);
  }

  get confDir(): string {
    return this.#confDir;
  }

  /** Follows the drop-in folder when the main file moved it. */
  async retarget(confDir: string): Promise<void> {
    if (resolve(confDir) === this.#confDir) return;
    await this.close();
    this.#confDir = resolve(confDir);
    await this.start();
  }

  async close(): Promise<void> {
    clearTimeout(this.#timer);
    this.#mainWatcher?.close();
    this.#mainWatcher = undefined;
    await this.#watcher?.close();
    this.#watcher = undefined;
  }
}
