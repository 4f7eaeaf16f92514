/**
 * packetpony_target_up, fed by the whole target-state maps children report: the latest map wins,
 * only the listener's current targets are shown, a listener without a pool shows none, and the
 * states travel in ListenerStats deltas only when they changed.
 */
import test from 'ava';
import type { HealthCheckSettings, TargetConfig } from '../../../src/config/types.js';
import { Metrics, type ListenerView } from '../../../src/telemetry/metrics/metrics.js';
import { ListenerStats, type StatsDelta } from '../../../src/telemetry/stats.js';

const CHECKS: HealthCheckSettings = { interval: 5000, timeout: 2000, rise: 2, fall: 3, send: '', expect: '' };

function targets(...addresses: string[]): TargetConfig[] {
  return addresses.map((address) => ({ address, endpoint: { host: address.split(':')[0]!, port: Number(address.split(':')[1]) }, backup: false }));
}

function report(states: Record<string, number>): { stats: StatsDelta; dropped_events: number } {
  const stats = new ListenerStats();
  stats.targets = states;
  return { stats: stats.takeDelta(), dropped_events: 0 };
}

async function targetUp(metrics: Metrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const line of (await metrics.render()).split('\n')) {
    const match = /^packetpony_target_up\{(.*)\} (\d+)$/.exec(line);
    if (match) out[match[1]!] = Number(match[2]);
  }
  return out;
}

test('ListenerStats: target states leave with the next delta only, and mark it dirty', (t) => {
  const stats = new ListenerStats();
  t.false(stats.dirty);
  stats.targets = { 'a:1': 1 };
  t.true(stats.dirty);
  t.deepEqual(stats.takeDelta().targets, { 'a:1': 1 });
  t.false(stats.dirty);
  t.false('targets' in stats.takeDelta());
});

test('the latest whole map wins; only current targets of listeners with a pool are shown', async (t) => {
  let views: ListenerView[] = [
    { name: 'web', config: { protocol: 'tcp', targets: targets('10.0.0.1:80', '10.0.0.2:80'), health_check: null }, state: 'ready', workerPids: new Map([[1, [1]]]) },
    { name: 'one', config: { protocol: 'tcp', targets: targets('10.0.0.9:80'), health_check: null }, state: 'ready', workerPids: new Map([[1, [2]]]) },
  ];
  const metrics = new Metrics(() => views);
  t.deepEqual(await targetUp(metrics), {}, 'nothing before the first report');
  metrics.report('web', report({ '10.0.0.1:80': 1, '10.0.0.2:80': 1 }), 1);
  metrics.report('one', report({ '10.0.0.9:80': 1 }), 2);
  t.deepEqual(await targetUp(metrics), { 'listener="web",target="10.0.0.1:80"': 1, 'listener="web",target="10.0.0.2:80"': 1 }, 'a single target without checks has no pool');
  metrics.report('web', report({ '10.0.0.1:80': 1, '10.0.0.2:80': 0 }), 1);
  t.is((await targetUp(metrics))['listener="web",target="10.0.0.2:80"'], 0);

  // A reload drops 10.0.0.2 and adds health checks to "one": the series follow the configuration.
  views = [
    { name: 'web', config: { protocol: 'tcp', targets: targets('10.0.0.1:80'), health_check: null }, state: 'ready', workerPids: new Map([[1, [3]]]) },
    { name: 'one', config: { protocol: 'tcp', targets: targets('10.0.0.9:80'), health_check: CHECKS }, state: 'ready', workerPids: new Map([[1, [4]]]) },
  ];
  metrics.report('one', report({ '10.0.0.9:80': 0 }), 4);
  t.deepEqual(await targetUp(metrics), { 'listener="one",target="10.0.0.9:80"': 0 });
});

test('a report from a child that is gone changes nothing', async (t) => {
  const views: ListenerView[] = [{ name: 'web', config: { protocol: 'tcp', targets: targets('a:1', 'b:1'), health_check: null }, state: 'ready', workerPids: new Map([[1, [7]]]) }];
  const metrics = new Metrics(() => views);
  metrics.report('web', report({ 'a:1': 1, 'b:1': 1 }), 7);
  metrics.childGone('web', 6);
  metrics.report('web', report({ 'a:1': 0, 'b:1': 0 }), 6);
  t.deepEqual(await targetUp(metrics), { 'listener="web",target="a:1"': 1, 'listener="web",target="b:1"': 1 });
});
