/** Where the package's own files are, whether run from the repository or an installed copy. */
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';

/** This file is dist/src/paths.js once built; the package root is two levels up. */
export const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const SCHEMA_DIR = fileURLToPath(new URL('../../schema/', import.meta.url));

export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}
