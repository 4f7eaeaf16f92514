/**
 * Reliability case 3 — dead backends. A target that refuses, one that never answers a SYN (a
 * listener with a full accept queue that never accepts) and a name that does not resolve.
 *
 * Pass criteria:
 * - refused and unresolvable: the client is closed (reset) within 500 ms of connecting ("promptly");
 * - never answering: the client is closed at tcp.connect_timeout ±10 %;
 * - every failure is logged as `Connection failed … error="…"` naming the reason;
 * - the child keeps serving: same PID throughout, still answering after the failures, and its
 *   open-descriptor count back at its baseline.
 */
import test from 'ava';
import { startDaemon } from '../helpers/daemon.js';
import { refusingPort } from '../helpers/servers.js';
import { connectionLines } from '../helpers/log-lines.js';
import { waitFor } from '../helpers/wait-for.js';
import { percentile, summary, timeToClose } from '../helpers/reliability/clients.js';
import { tcpListener } from '../helpers/reliability/config.js';
import { silentPort, UNRESOLVABLE } from '../helpers/reliability/dead-backends.js';
import { fdCount } from '../helpers/reliability/proc.js';
import { lateBound, size } from '../helpers/reliability/scale.js';

const PROMPT_MS = 500;
const CONCURRENT = size(50, 200);

test.serial(`refused target: ${CONCURRENT} clients each reset within ${PROMPT_MS} ms, error event names ECONNREFUSED, child PID and fds unchanged`, async (t) => {
  const dead = await refusingPort(t);
  const daemon = await startDaemon(t, { 'conf.d/refused.yaml': tcpListener(`127.0.0.1:${dead}`) });
  const port = await daemon.port('refused');
  const pid = await daemon.childPid('refused');
  const baseline = fdCount(pid);
  const endings = await Promise.all(Array.from({ length: CONCURRENT }, () => timeToClose(t, port)));
  const times = endings.map((e) => e.endedAt - e.startedAt);
  t.log(`refused: time to reset (ms) ${summary(times)}; child fds ${baseline}`);
  t.true(Math.max(...times) <= lateBound(PROMPT_MS), summary(times));
  t.true(endings.every((e) => e.how === 'ECONNRESET' || e.how === 'close' || e.how === 'end'), JSON.stringify(endings.map((e) => e.how)));
  const failed = await waitFor(() => (connectionLines(daemon, 'failed', 'refused').length >= CONCURRENT ? connectionLines(daemon, 'failed', 'refused') : undefined), 'the failure events');
  t.true(failed.every((l) => /error="connect to 127\.0\.0\.1:\d+ failed: connection refused \(ECONNREFUSED\)"/.test(l)), failed[0]);
  t.is(await daemon.childPid('refused'), pid);
  await waitFor(() => fdCount(pid) <= baseline || undefined, `child fds back to ${baseline} (now ${fdCount(pid)})`);
});

test.serial('never-answering target: each client is closed at connect_timeout ±10 %, error event says timed out, fds back to baseline', async (t) => {
  const timeoutMs = size(2000, 10_000);
  const silent = await silentPort(t);
  const daemon = await startDaemon(t, { 'conf.d/silent.yaml': tcpListener(`127.0.0.1:${silent}`, `tcp:\n  connect_timeout: "${timeoutMs}ms"\n`) });
  const port = await daemon.port('silent');
  const pid = await daemon.childPid('silent');
  const baseline = fdCount(pid);
  const endings = await Promise.all(Array.from({ length: CONCURRENT }, () => timeToClose(t, port)));
  const times = endings.map((e) => e.endedAt - e.startedAt);
  t.log(`never answering, connect_timeout ${timeoutMs} ms: time to reset (ms) ${summary(times)}; child fds ${baseline}`);
  t.true(Math.min(...times) >= timeoutMs * 0.9, summary(times));
  t.true(Math.max(...times) <= lateBound(timeoutMs * 1.1), summary(times));
  const failed = await waitFor(() => (connectionLines(daemon, 'failed', 'silent').length >= CONCURRENT ? connectionLines(daemon, 'failed', 'silent') : undefined), 'the failure events');
  t.true(failed.every((l) => l.includes(`timed out after ${timeoutMs} ms`)), failed[0]);
  t.is(await daemon.childPid('silent'), pid);
  await waitFor(() => fdCount(pid) <= baseline || undefined, `child fds back to ${baseline} (now ${fdCount(pid)})`);
  t.log(`p50 overshoot ${(percentile(times, 50) - timeoutMs).toFixed(0)} ms`);
});

test.serial(`unresolvable target name: ${CONCURRENT} clients each reset within ${PROMPT_MS} ms, error event says the name does not resolve, the child keeps serving`, async (t) => {
  const daemon = await startDaemon(t, { 'conf.d/nxdomain.yaml': tcpListener(`${UNRESOLVABLE}:80`) });
  const port = await daemon.port('nxdomain');
  const pid = await daemon.childPid('nxdomain');
  const baseline = fdCount(pid);
  // Twice: the first wave resolves (and fails), the second meets the 5 s negative cache.
  for (const wave of ['first', 'second']) {
    const endings = await Promise.all(Array.from({ length: CONCURRENT }, () => timeToClose(t, port)));
    const times = endings.map((e) => e.endedAt - e.startedAt);
    t.log(`unresolvable, ${wave} wave: time to reset (ms) ${summary(times)}`);
    t.true(Math.max(...times) <= lateBound(PROMPT_MS), summary(times));
  }
  const failed = await waitFor(() => (connectionLines(daemon, 'failed', 'nxdomain').length >= 2 * CONCURRENT ? connectionLines(daemon, 'failed', 'nxdomain') : undefined), 'the failure events');
  t.true(failed.every((l) => l.includes(`error="cannot resolve ${UNRESOLVABLE}: no such name`)), failed[0]);
  t.is(await daemon.childPid('nxdomain'), pid);
  await waitFor(() => fdCount(pid) <= baseline || undefined, `child fds back to ${baseline} (now ${fdCount(pid)})`);
});
