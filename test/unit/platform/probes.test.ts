/**
 * The probes of src/platform: on this Node they find what they look for; with
 * PACKETPONY_PUBLIC_PATH=1 every one says no, and so does each one behind process.binding under the
 * permission model (ERR_ACCESS_DENIED), in which case the relay takes the public path instead of
 * refusing to start. Each case in a fresh process: the answers are kept once given.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { probeAddonSockets, probeDgramHandle, probeServerHandleHelper, probeTcpWrap, probeUdpSendWrap, publicPathForced, type Probe } from '../../../src/platform/index.js';

const PLATFORM = new URL('../../../src/platform/index.js', import.meta.url).href;
const REPORT = new URL('../../../src/supervisor/platform-report.js', import.meta.url).href;
const PATH = new URL('../../../src/proxy/tcp-path.js', import.meta.url).href;

interface Answers {
  readonly probes: Record<string, Probe>;
  readonly tcp: { relay: string; socket: string };
  readonly udp: { relay: string; socket: string };
  readonly ends: string;
}

/** The probes as a fresh node process with `flags` and `env` sees them. */
function probesIn(flags: string[], env: Record<string, string> = {}): Answers {
  const script = `
    const p = await import(${JSON.stringify(PLATFORM)});
    const r = await import(${JSON.stringify(REPORT)});
    const t = await import(${JSON.stringify(PATH)});
    const probes = {};
    for (const f of ['probeTcpWrap', 'probeUdpSendWrap', 'probeDgramHandle', 'probeServerHandleHelper', 'probeSocketHandleHelper', 'probeAddonSockets']) probes[f] = p[f]();
    const { relay: tr, socket: ts } = r.protocolPath('tcp');
    const { relay: ur, socket: us } = r.protocolPath('udp');
    process.stdout.write(JSON.stringify({ probes, tcp: { relay: tr, socket: ts }, udp: { relay: ur, socket: us }, ends: t.tcpEnds().description }));
  `;
  const result = spawnSync(process.execPath, [...flags, '--input-type=module', '-e', script], {
    encoding: 'utf8',
    env: { ...process.env, PACKETPONY_PUBLIC_PATH: '', ...env },
    cwd: fileURLToPath(new URL('.', import.meta.url)),
  });
  if (result.status !== 0) throw new Error(`probe process failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as Answers;
}

/** `--permission` (Node 22.13 and later) or its earlier name. */
function permissionFlags(): string[] {
  const [major, minor] = process.versions.node.split('.').map(Number) as [number, number];
  const stable = major > 22 || (major === 22 && minor >= 13);
  return [stable ? '--permission' : '--experimental-permission', '--allow-fs-read=*'];
}

// In a run with PACKETPONY_PUBLIC_PATH=1 (the public path's run) this process's probes all say no.
(publicPathForced() ? test.skip : test)('on this Node every probe answers with a name, and the internals the fast paths use are there', (t) => {
  for (const probe of [probeTcpWrap(), probeUdpSendWrap(), probeDgramHandle(), probeServerHandleHelper(), probeAddonSockets()]) {
    t.true(probe.name.length > 0);
    t.true(probe.usable, `${probe.name}: ${probe.reason}`);
    t.is(probe.reason, '');
  }
});

test('PACKETPONY_PUBLIC_PATH=1: every internal is ruled out, TCP relays over net.Socket and sockets come from the addon', (t) => {
  const answers = probesIn([], { PACKETPONY_PUBLIC_PATH: '1' });
  for (const name of ['probeTcpWrap', 'probeUdpSendWrap', 'probeDgramHandle', 'probeServerHandleHelper', 'probeSocketHandleHelper']) {
    t.false(answers.probes[name]!.usable, name);
    t.is(answers.probes[name]!.reason, 'not used (PACKETPONY_PUBLIC_PATH=1)');
  }
  t.true(answers.probes['probeAddonSockets']!.usable, 'our addon is no Node internal');
  t.deepEqual(answers.tcp, { relay: 'net.Socket', socket: 'addon-descriptor' });
  t.deepEqual(answers.udp, { relay: 'dgram', socket: 'addon-descriptor' });
  t.is(answers.ends, 'net.Socket (public API)');
});

test('under the permission model process.binding is denied: said so, and TCP takes net.Socket instead of refusing to start', (t) => {
  const answers = probesIn(permissionFlags());
  t.false(answers.probes['probeTcpWrap']!.usable);
  t.regex(answers.probes['probeTcpWrap']!.reason, /denied \(ERR_ACCESS_DENIED/);
  t.false(answers.probes['probeUdpSendWrap']!.usable);
  t.regex(answers.probes['probeUdpSendWrap']!.reason, /denied \(ERR_ACCESS_DENIED/);
  t.is(answers.tcp.relay, 'net.Socket');
  t.is(answers.ends, 'net.Socket (public API)');
  // Without --allow-addons the addon does not load: sockets come from Node's helper where it has one.
  t.false(answers.probes['probeAddonSockets']!.usable);
});
