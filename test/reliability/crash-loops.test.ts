/**
 * Reliability case 10 — crash loops. A UDP listener whose target name does not resolve: its child
 * fails at start-up, every time.
 *
 * Pass criteria:
 * - restarts back off: 100 ms, doubling each time, up to the 30 s cap (the full run waits for the
 *   cap; CI checks the first doublings);
 * - no CPU spin: the supervisor itself uses less than 10 % of one core over the loop, and each
 *   failed start costs its child less than 1 CPU second (node's own start-up, ~0.3 s here); over
 *   the full run to the cap, supervisor and children together use less than 10 % of a core (a spin
 *   would be ~100 %);
 * - /ready answers 503 naming the listener; /health stays 200;
 * - another listener serves throughout, with the same child;
 * - the log does not flood: at most two lines per failed start.
 */
import test from 'ava';
import { startDaemon } from '../helpers/daemon.js';
import { startEchoServer } from '../helpers/servers.js';
import { attempt, hangUp } from '../helpers/tcp-clients.js';
import { waitFor } from '../helpers/wait-for.js';
import { mainFile, tcpListener, udpListener } from '../helpers/reliability/config.js';
import { UNRESOLVABLE } from '../helpers/reliability/dead-backends.js';
import { cpuSplit } from '../helpers/reliability/proc.js';
import { FULL } from '../helpers/reliability/scale.js';

const CAP_MS = 30_000;
const MAX_CPU_SHARE = 0.1;
const MAX_CPU_PER_START = 1;

test.serial(`crash loop: a child that dies at start backs off 100 ms → ${FULL ? '30 s cap' : '3.2 s'}, no CPU spin, /ready says 503 naming it, the other listener serves`, async (t) => {
  t.timeout(FULL ? 180_000 : 60_000);
  const echo = await startEchoServer(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': mainFile({ metrics: true }),
    'conf.d/good.yaml': tcpListener(`127.0.0.1:${echo}`),
    'conf.d/broken.yaml': udpListener(`${UNRESOLVABLE}:53`),
  });
  const goodPort = await daemon.port('good');
  const goodPid = await daemon.childPid('good');
  const metrics = Number(/address=\S+:(\d+)/.exec(await daemon.waitForLine(/metrics server started address=\S+:\d+/))![1]);
  const cpuStart = cpuSplit(daemon.pid);
  const wallStart = performance.now();

  // Every restart announces its delay; wait for the last one this run looks at.
  const last = FULL ? CAP_MS : 3200;
  const restartLine = (l: string): boolean => l.includes('listener broken: child exited with code');
  const delays = (): number[] => daemon.lines.filter(restartLine).map((l) => Number(/restarting in (\d+) ms/.exec(l)![1]));
  let served = 0;
  let readyChecks = 0;
  let nextProbe = 0;
  await waitFor(
    async () => {
      if (performance.now() < nextProbe) return delays().includes(last);
      nextProbe = performance.now() + 500;
      // Meanwhile: the other listener serves, /ready names the broken one, /health is fine.
      const client = await attempt(t, goodPort);
      if (client === null) throw new Error('the good listener refused a client during the crash loop');
      served++;
      await hangUp(client);
      const ready = await fetch(`http://127.0.0.1:${metrics}/ready`);
      const body = (await ready.json()) as { not_ready?: Array<{ listener: string; state: string }> };
      if (ready.status !== 503 || !body.not_ready?.some((n) => n.listener === 'broken')) throw new Error(`/ready: ${ready.status} ${JSON.stringify(body)}`);
      if (body.not_ready.some((n) => n.listener === 'good')) throw new Error(`/ready names the good listener: ${JSON.stringify(body)}`);
      readyChecks++;
      if ((await fetch(`http://127.0.0.1:${metrics}/health`)).status !== 200) throw new Error('/health is not 200');
      return delays().includes(last);
    },
    `a restart delay of ${last} ms`,
    FULL ? 150_000 : 40_000,
  );
  const wall = (performance.now() - wallStart) / 1000;
  const cpuEnd = cpuSplit(daemon.pid);
  const supervisorCpu = cpuEnd.self - cpuStart.self;
  const childrenCpu = cpuEnd.children - cpuStart.children;
  const cpu = supervisorCpu + childrenCpu;
  const seen = delays();
  t.log(`restart delays (ms): ${seen.join(', ')}`);
  t.log(`${seen.length} failed starts in ${wall.toFixed(1)} s: supervisor ${supervisorCpu.toFixed(2)} CPU s (${((supervisorCpu / wall) * 100).toFixed(1)} % of a core), children ${childrenCpu.toFixed(2)} CPU s (${(childrenCpu / seen.length).toFixed(2)} s per start); together ${((cpu / wall) * 100).toFixed(1)} % of a core`);
  t.log(`meanwhile the good listener served ${served} clients and /ready was 503 naming "broken" at ${readyChecks} checks`);
  const expected = seen.map((_, i) => Math.min(100 * 2 ** i, CAP_MS));
  t.deepEqual(seen, expected);
  t.true(supervisorCpu / wall < MAX_CPU_SHARE, `supervisor: ${((supervisorCpu / wall) * 100).toFixed(1)} % of a core`);
  t.true(childrenCpu / seen.length < MAX_CPU_PER_START, `${(childrenCpu / seen.length).toFixed(2)} CPU s per start`);
  if (FULL) t.true(cpu / wall < MAX_CPU_SHARE, `together: ${((cpu / wall) * 100).toFixed(1)} % of a core`);
  t.is(await daemon.childPid('good'), goodPid);
  const brokenLines = daemon.lines.filter((l) => l.includes('listener broken'));
  t.log(`log lines about the broken listener: ${brokenLines.length} (first: ${brokenLines[0]})`);
  t.true(brokenLines.length <= 2 * seen.length + 2, `${brokenLines.length} lines for ${seen.length} failed starts`);
  t.regex(brokenLines.join('\n'), new RegExp(`cannot resolve ${UNRESOLVABLE.replace(/\./g, '\\.')}`));
});
