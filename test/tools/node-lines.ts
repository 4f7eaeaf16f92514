/**
 * The Node.js lines PacketPony supports and tests: the machine's own (20, the oldest, which
 * @types/node follows so that the code uses nothing newer) and the newer LTS lines, each pinned
 * to its latest release, the binary `npm run test:node` fetches (test-node.ts). package.json's
 * `engines` and README.md's requirements say the same; test/unit/repository.test.ts checks it.
 */
export const OLDEST_LINE = '20';

/** package.json's engines.node: one range per line, from the oldest release known to work. */
export const ENGINES = '^20.19.0 || ^22.12.0 || ^24.0.0 || ^26.0.0';

export const PINNED: Readonly<Record<string, string>> = {
  '22': '22.23.5',
  '24': '24.22.3',
  '26': '26.12.1',
};
