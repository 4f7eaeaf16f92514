/** Reading the daemon's Prometheus endpoint in tests. */
import http from 'node:http';
import { MAIN_FILE, type Daemon } from './daemon.js';
import { waitFor } from './wait-for.js';

/** A main file with stdout logging and the metrics server on a free loopback port. */
export const MAIN_FILE_WITH_METRICS = `${MAIN_FILE}metrics:\n  prometheus:\n    enabled: true\n    listen_address: "127.0.0.1:0"\n`;

function get(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path }, (response) => {
        let body = '';
        response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
        response.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

/** The value of one sample (`name{labels}`, labels in any order), 0 when absent. */
export function sample(text: string, name: string, labels: Record<string, string>): number {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const close = line.indexOf('}');
    const have = line.slice(name.length + 1, close).split(',');
    if (wanted.every((label) => have.includes(label))) return Number(line.slice(close + 1).trim());
  }
  return 0;
}

/**
 * Waits until `name{labels}` reaches `atLeast` (child counters reach the supervisor in batches)
 * and returns its value then.
 */
export async function waitForSample(daemon: Daemon, name: string, labels: Record<string, string>, atLeast: number, timeoutMs = 10_000): Promise<number> {
  const port = await metricsPort(daemon);
  let last = 0;
  try {
    return await waitFor(async () => {
      last = sample(await get(port, '/metrics'), name, labels);
      return last >= atLeast ? last : undefined;
    }, `${name}${JSON.stringify(labels)} ≥ ${atLeast}`, timeoutMs);
  } catch (error) {
    throw new Error(`${(error as Error).message} (last seen: ${last})`);
  }
}

async function metricsPort(daemon: Daemon): Promise<number> {
  const line = await daemon.waitForLine(/\[INFO\] metrics server started /);
  return Number(/address=\S*:(\d+)/.exec(line)![1]);
}

/** The value of `name{labels}` now. */
export async function readSample(daemon: Daemon, name: string, labels: Record<string, string>): Promise<number> {
  return sample(await get(await metricsPort(daemon), '/metrics'), name, labels);
}

/** Waits until `name{labels}` is down to `atMost` (a level falling) and returns its value then. */
export async function waitForSampleAtMost(daemon: Daemon, name: string, labels: Record<string, string>, atMost: number, timeoutMs = 10_000): Promise<number> {
  const port = await metricsPort(daemon);
  let last = NaN;
  try {
    return await waitFor(async () => {
      last = sample(await get(port, '/metrics'), name, labels);
      return last <= atMost ? last : undefined;
    }, `${name}${JSON.stringify(labels)} ≤ ${atMost}`, timeoutMs);
  } catch (error) {
    throw new Error(`${(error as Error).message} (last seen: ${last})`);
  }
}
