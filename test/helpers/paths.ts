/** Paths of the repository, for tests running from dist/test/. */
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/', import.meta.url));
export const CLI = fileURLToPath(new URL('../../../dist/src/cli.js', import.meta.url));
