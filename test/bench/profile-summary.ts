/**
 * Reads .cpuprofile files (node --cpu-prof) and prints where the time went: self time by function
 * and by file, top entries. node profile-summary.js FILE... [--top N]
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const args = process.argv.slice(2);
const topIndex = args.indexOf('--top');
const top = topIndex >= 0 ? Number(args[topIndex + 1]) : 30;
const files = args.filter((_, i) => topIndex < 0 || (i !== topIndex && i !== topIndex + 1));

for (const file of files) {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  for (const [id, us] of self) {
    const f = byId.get(id)!.callFrame;
    const where = f.url.replace(/^.*\/(dist|node_modules)\//, '$1/').replace(/^node:/, '');
    const key = `${f.functionName || '(anonymous)'} ${where}:${f.lineNumber + 1}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
    byFile.set(where || f.functionName, (byFile.get(where || f.functionName) ?? 0) + us);
  }
  const show = (m: Map<string, number>, n: number): void => {
    for (const [k, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, n)) {
      process.stdout.write(`${((us / total) * 100).toFixed(1).padStart(5)} %  ${k}\n`);
    }
  };
  process.stdout.write(`\n== ${file}: ${(total / 1e6).toFixed(2)} s sampled\n-- by function\n`);
  show(byFunction, top);
  process.stdout.write('-- by file\n');
  show(byFile, 15);
}
