/**
 * Allowlists and per-IP rate limits on UDP listeners, end to end (issue 6): a session is the
 * connection, and every datagram, both ways, is bandwidth. Different clients are different
 * loopback source addresses. Datagrams a limit drops are simply not answered, so what passed is
 * measured with a small reliable transfer (helpers/udp.ts) that resends what is not acknowledged.
 * Rates are checked against generous fractions of the configured values and logged.
 */
import test, { type ExecutionContext } from 'ava';
import { startDaemon } from '../helpers/daemon.js';
import { connectionLines, denyLines, field, refusalsIn, sourcePort, waitForConnectionLines, waitForDeny } from '../helpers/log-lines.js';
import { MAIN_FILE_WITH_METRICS, waitForSample } from '../helpers/metrics.js';
import { slots } from '../helpers/slots.js';
import { ackSequence, echo, reliableTransfer, startUdpBackend, udpClient, uniqueBytes, type UdpBackend, type UdpClient } from '../helpers/udp.js';
import { waitFor } from '../helpers/wait-for.js';
import { ACTION_YAML, LIMIT_YAML, type Action, type CountLimit } from '../helpers/limit-yaml.js';

const MB = 1024 * 1024;
/** Daemons of this file running at once (see slots.ts). */
const slot = slots(3);

function udpListener(target: string, options: { allow?: string; limits?: string; listen?: string; udp?: string } = {}): string {
  const limits = options.limits ? `rate_limits:\n${options.limits.replace(/^/gm, '  ')}\n` : '';
  const udp = options.udp ? `udp:\n${options.udp.replace(/^/gm, '  ')}\n` : '';
  return `protocol: udp\nlisten_address: "${options.listen ?? '127.0.0.1:0'}"\ntarget_address: "${target}"\nallowlist: ${options.allow ?? '["127.0.0.0/8", "::1"]'}\n${limits}${udp}`;
}

/** Datagrams from this client the backend received (each request carries the client's tag). */
function fromClient(backend: UdpBackend, tag: string): number {
  return backend.received.filter((d) => String(d.data).startsWith(`${tag} `)).length;
}

/** Sends a tagged request and says whether the reply came (a dropped datagram gets none). */
async function answered(client: UdpClient, tag: string, timeoutMs = 1000): Promise<boolean> {
  try {
    await client.request(`${tag} ${client.localPort}`, timeoutMs);
    return true;
  } catch {
    return false;
  }
}

// ---- allowlist ------------------------------------------------------------------------------

test('allowlist: datagrams from outside it never reach the target; refusals are logged, aggregated per source', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t);
  const daemon = await startDaemon(t, {
    'packetpony.yaml': MAIN_FILE_WITH_METRICS,
    'conf.d/acl.yaml': udpListener(`127.0.0.1:${backend.port}`, { allow: '["127.0.0.1/32"]' }),
  });
  const port = await daemon.port('acl');
  const outsider = await udpClient(t, port, { localAddress: '127.0.0.2' });
  for (let i = 0; i < 30; i++) outsider.send(`outsider ${i}`);
  const first = await waitForDeny(daemon, 'acl', 'acl', '127.0.0.2');
  t.regex(first, new RegExp(`\\] Connection denied: listener=acl protocol=udp src=127\\.0\\.0\\.2:${outsider.localPort} reason=acl action=deny$`));
  const insider = await udpClient(t, port);
  t.true(await answered(insider, 'insider', 5000));
  t.is(fromClient(backend, 'outsider'), 0, 'the target never saw a denied datagram');
  t.is(await waitForSample(daemon, 'packetpony_acl_drops_total', { listener: 'acl' }, 30), 30, 'counted per datagram');
  t.is(connectionLines(daemon, 'opened', 'acl', outsider.localPort).length, 0);
  // 30 refusals: the first at once, the rest as one count when the aggregation interval ends.
  const lines = await waitFor(() => {
    const all = denyLines(daemon, 'acl', 'acl', '127.0.0.2');
    return refusalsIn(all) >= 30 ? all : undefined;
  }, 'the count line', 20_000);
  t.log(lines.join('\n'));
  t.is(refusalsIn(lines), 30);
  t.true(lines.length <= 3, `${lines.length} lines for 30 refusals`);
});

test('allowlist on dual-stack listeners: IPv4 clients meet the IPv4 rules, and ::/0 does not admit them', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t);
  const daemon = await startDaemon(t, {
    'conf.d/v4rule.yaml': udpListener(`127.0.0.1:${backend.port}`, { allow: '["127.0.0.1/32"]', listen: ':0' }),
    'conf.d/v6rule.yaml': udpListener(`127.0.0.1:${backend.port}`, { allow: '["::/0"]', listen: '[::]:0' }),
  });
  const v4rule = await daemon.port('v4rule');
  const v6rule = await daemon.port('v6rule');

  const v4client = await udpClient(t, v4rule);
  t.true(await answered(v4client, 'v4-on-v4rule', 5000), 'the listener sees ::ffff:127.0.0.1, and 127.0.0.1/32 admits it');
  const [open] = await waitForConnectionLines(daemon, 'opened', 'v4rule', 1);
  t.regex(open!, new RegExp(`protocol=udp src=127\\.0\\.0\\.1:${v4client.localPort} dst=`), 'logged in IPv4 form');
  const v6client = await udpClient(t, v4rule, { host: '::1' });
  v6client.send('v6-on-v4rule');
  t.regex(await waitForDeny(daemon, 'v4rule', 'acl'), new RegExp(`src=\\[::1\\]:${v6client.localPort} reason=acl`));

  const mapped = await udpClient(t, v6rule);
  mapped.send('v4-on-v6rule');
  t.regex(await waitForDeny(daemon, 'v6rule', 'acl'), new RegExp(`src=127\\.0\\.0\\.1:${mapped.localPort} reason=acl action=deny$`), '::/0 admits no IPv4 client');
  t.true(await answered(await udpClient(t, v6rule, { host: '::1' }), 'v6-on-v6rule', 5000));
  t.is(fromClient(backend, 'v6-on-v4rule') + fromClient(backend, 'v4-on-v6rule'), 0);
});

// ---- count limits × actions ---------------------------------------------------------------

/**
 * Two sessions use up the limit (per-address limits: two source ports of 127.0.0.2; the
 * listener-wide one: 127.0.0.2 and 127.0.0.3); a third session breaks it.
 */
const countLimit = test.macro({
  title: (_, limit: CountLimit, action: Action) =>
    `${limit} × ${action}: a session over the limit is ${action === 'log_only' ? 'logged and let through' : 'refused'}${limit === 'total_limit' ? '' : '; other addresses are unaffected'}`,
  async exec(t: ExecutionContext, limit: CountLimit, action: Action) {
    await slot(t);
    const backend = await startUdpBackend(t);
    const daemon = await startDaemon(t, {
      'conf.d/lim.yaml': udpListener(`127.0.0.1:${backend.port}`, { limits: `${LIMIT_YAML[limit]}\n${ACTION_YAML[action]}` }),
    });
    const port = await daemon.port('lim');
    const perAddress = limit !== 'total_limit';
    for (const [i, source] of (perAddress ? ['127.0.0.2', '127.0.0.2'] : ['127.0.0.2', '127.0.0.3']).entries()) {
      t.true(await answered(await udpClient(t, port, { localAddress: source }), `within-${i}`, 5000), `session ${i} from ${source}`);
    }
    const over = perAddress ? '127.0.0.2' : '127.0.0.4';
    const third = await udpClient(t, port, { localAddress: over });
    third.send(`over ${third.localPort}`);
    const line = await waitForDeny(daemon, 'lim', limit, over);
    const src = `src=${over.replaceAll('.', '\\.')}:${third.localPort}`;
    if (action === 'log_only') {
      t.regex(line, new RegExp(`\\] Limit exceeded: listener=lim protocol=udp ${src} reason=${limit} action=log_only$`));
      await third.reply(0);
      t.is(fromClient(backend, 'over'), 1);
    } else {
      t.regex(line, new RegExp(`\\] Connection denied: listener=lim protocol=udp ${src} reason=${limit} action=${action}$`));
      t.is(fromClient(backend, 'over'), 0, 'the refused datagram never reached the target');
      t.is(connectionLines(daemon, 'opened', 'lim', third.localPort).length, 0);
      // The other sessions go on.
      t.is(connectionLines(daemon, 'opened', 'lim').length, 2);
    }
    if (perAddress) {
      t.true(await answered(await udpClient(t, port, { localAddress: '127.0.0.3' }), 'other', 5000), 'another address has its own quota');
      t.is(denyLines(daemon, 'lim', limit, '127.0.0.3').length, 0);
    }
  },
});

for (const limit of ['connection_limit', 'attempt_limit', 'total_limit'] as const) {
  for (const action of ['drop', 'throttle', 'log_only'] as const) test(countLimit, limit, action);
}

test('max_connections_per_ip counts open sessions: one that idles out frees its slot', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t);
  const daemon = await startDaemon(t, {
    'conf.d/cap.yaml': udpListener(`127.0.0.1:${backend.port}`, { limits: 'max_connections_per_ip: 1\nconnections_window: "1h"', udp: 'session_timeout: "500ms"' }),
  });
  const port = await daemon.port('cap');
  const first = await udpClient(t, port, { localAddress: '127.0.0.2' });
  const second = await udpClient(t, port, { localAddress: '127.0.0.2' });
  t.true(await answered(first, 'first', 5000));
  second.send(`second ${second.localPort}`);
  await waitForDeny(daemon, 'cap', 'connection_limit', '127.0.0.2');
  // The close event is emitted after the slot is released: from then on, one datagram must do.
  await waitForConnectionLines(daemon, 'closed', 'cap', 1, first.localPort);
  t.true(await answered(second, 'second', 5000), 'the freed slot is usable');
  t.is(fromClient(backend, 'second'), 1, 'only the datagram sent after the slot was freed');
});

test('max_connection_attempts_per_ip: each datagram of a refused client is another attempt, so hammering stays blocked', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t);
  const windowMs = 2000;
  const daemon = await startDaemon(t, {
    'conf.d/hammer.yaml': udpListener(`127.0.0.1:${backend.port}`, {
      limits: `max_connection_attempts_per_ip: 3\nattempts_window: "${windowMs}ms"`,
      udp: 'session_timeout: "200ms"',
    }),
  });
  const port = await daemon.port('hammer');
  for (let i = 0; i < 3; i++) t.true(await answered(await udpClient(t, port, { localAddress: '127.0.0.2' }), `ok-${i}`, 5000));
  const hammer = await udpClient(t, port, { localAddress: '127.0.0.2' });
  const hammerUntil = performance.now() + windowMs * 1.5;
  let sent = 0;
  while (performance.now() < hammerUntil) {
    hammer.send(`hammer ${sent++}`);
    await new Promise((resolve) => setTimeout(resolve, 100)); // the client's pace, not synchronisation
  }
  t.true(await answered(await udpClient(t, port, { localAddress: '127.0.0.3' }), 'other', 5000), '127.0.0.3 is not affected');
  t.is(fromClient(backend, 'hammer'), 0, `none of ${sent} datagrams over ${windowMs * 1.5} ms got through`);
  t.is(hammer.replies.length, 0);
  // Coming back after pauses longer than half the window (at most two attempts per window), the
  // client is admitted again once the hammering has left the window.
  await waitFor(async () => {
    await new Promise((resolve) => setTimeout(resolve, windowMs * 0.6));
    return answered(hammer, 'back', 500);
  }, 'a datagram after the window to be admitted', 20_000);
  t.pass();
});

test('per-address limits hold for each of 100 source addresses on its own', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t);
  const daemon = await startDaemon(t, {
    'conf.d/many.yaml': udpListener(`127.0.0.1:${backend.port}`, { limits: 'max_connection_attempts_per_ip: 1\nattempts_window: "1m"' }),
  });
  const port = await daemon.port('many');
  const sources = Array.from({ length: 100 }, (_, i) => `127.0.1.${i + 1}`);
  const firsts = await Promise.all(sources.map((source) => udpClient(t, port, { localAddress: source })));
  const admitted = await Promise.all(firsts.map((client, i) => answered(client, `first-${i}`, 5000)));
  t.is(admitted.filter(Boolean).length, 100, "every address's first session is admitted, whatever the others did");
  const seconds = await Promise.all(sources.map((source) => udpClient(t, port, { localAddress: source })));
  for (const [i, client] of seconds.entries()) client.send(`second-${i} ${client.localPort}`);
  await waitFor(() => refusalsIn(denyLines(daemon, 'many', 'attempt_limit')) >= 100 || undefined, '100 attempt_limit refusals');
  t.is(new Set(denyLines(daemon, 'many', 'attempt_limit').map((l) => field(l, 'src')!.split(':')[0])).size, 100, 'one refusal per address');
  t.is(backend.received.filter((d) => String(d.data).startsWith('second-')).length, 0);
});

// ---- bandwidth × actions ------------------------------------------------------------------

/** 8,000-byte datagrams: 3 MB is 394 of them. */
const CHUNK = 8000;
const BUFFER = 'buffer_size: 8192';

function bandwidthLimits(action: Action, windowS: number): string {
  return `max_bandwidth_per_ip: "1MB"\nbandwidth_window: "${windowS}s"\naction: ${action}${action === 'throttle' ? '\nthrottle_minimum: "1MB"' : ''}`;
}

test('bandwidth × drop: datagrams both ways count, and nothing passes beyond 1 MB; other addresses keep their quota', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t, { respond: echo });
  const daemon = await startDaemon(t, { 'conf.d/bw.yaml': udpListener(`127.0.0.1:${backend.port}`, { limits: bandwidthLimits('drop', 30), udp: BUFFER }) });
  const port = await daemon.port('bw');
  const client = await udpClient(t, port, { localAddress: '127.0.0.2' });
  const result = await reliableTransfer(client, 3 * MB, { chunk: CHUNK, giveUpMs: 1500 });
  const up = uniqueBytes(backend.received, CHUNK);
  t.log(`3 MB offered: ${up} bytes reached the target, ${result.deliveredBytes} came back, ${result.retransmits} resends`);
  t.false(result.complete);
  // Echoed, each datagram counts twice: the cap is reached after about 512 KB each way (a few
  // requests more than replies: near the cap a request may fit where its echo no longer does).
  t.true(up + result.deliveredBytes <= MB, `${up} + ${result.deliveredBytes} bytes passed a 1 MB cap`);
  t.true(up <= 0.75 * MB, `${up} bytes reached the target: replies were not counted`);
  // Near the cap, not far below it: every datagram that reached the target (resends too; on a busy
  // machine the client's socket overflows and it resends) and its echo were counted, so the
  // requests that passed are about half the cap, whatever came back.
  const passedUp = backend.received.reduce((sum, d) => sum + d.data.length, 0);
  t.true(passedUp >= MB / 4, `cut after ${passedUp} bytes toward the target, far below the cap`);
  const deny = await waitForDeny(daemon, 'bw', 'bandwidth_limit', '127.0.0.2');
  t.regex(deny, new RegExp(`\\] Connection denied: listener=bw protocol=udp src=127\\.0\\.0\\.2:${client.localPort} reason=bandwidth_limit action=drop`));

  const other = await udpClient(t, port, { localAddress: '127.0.0.3' });
  const small = await reliableTransfer(other, 256 * 1024, { chunk: CHUNK });
  t.true(small.complete, '127.0.0.3 has its own megabyte');
});

test('bandwidth × throttle: a 3 MB transfer completes at about throttle_minimum per window', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t, { respond: ackSequence });
  const windowS = 2;
  const daemon = await startDaemon(t, { 'conf.d/slow.yaml': udpListener(`127.0.0.1:${backend.port}`, { limits: bandwidthLimits('throttle', windowS), udp: BUFFER }) });
  const port = await daemon.port('slow');
  const client = await udpClient(t, port, { localAddress: '127.0.0.2' });
  const result = await reliableTransfer(client, 3 * MB, { chunk: CHUNK, giveUpMs: 10_000 });
  t.true(result.complete, `${result.deliveredBytes} bytes acknowledged`);
  // The first megabyte passes at once; the rest at 1 MB per 2 s window.
  const rate = MB / (windowS * 1000);
  const theoreticalMs = (3 * MB - MB) / rate;
  t.log(`3 MB took ${result.elapsedMs.toFixed(0)} ms (theory ≥ ${theoreticalMs} ms at ${(rate * 1000 / MB).toFixed(2)} MB/s), ${(3 / (result.elapsedMs / 1000)).toFixed(2)} MB/s overall, ${result.retransmits} resends`);
  t.true(result.elapsedMs >= theoreticalMs * 0.5, `3 MB in ${result.elapsedMs} ms: not throttled`);
  const line = await waitForDeny(daemon, 'slow', 'bandwidth_limit', '127.0.0.2');
  t.regex(line, new RegExp(`Limit exceeded: .*src=127\\.0\\.0\\.2:${client.localPort} reason=bandwidth_limit action=throttle`));
});

test('bandwidth × log_only: a 3 MB transfer passes whole and the violation is logged once', async (t) => {
  await slot(t);
  const backend = await startUdpBackend(t, { respond: ackSequence });
  const daemon = await startDaemon(t, { 'conf.d/watch.yaml': udpListener(`127.0.0.1:${backend.port}`, { limits: bandwidthLimits('log_only', 30), udp: BUFFER }) });
  const client = await udpClient(t, await daemon.port('watch'));
  const result = await reliableTransfer(client, 3 * MB, { chunk: CHUNK });
  t.log(`3 MB in ${result.elapsedMs.toFixed(0)} ms, ${result.retransmits} resends`);
  t.true(result.complete);
  t.is(uniqueBytes(backend.received, CHUNK), Math.ceil((3 * MB) / CHUNK) * CHUNK);
  const line = await waitForDeny(daemon, 'watch', 'bandwidth_limit');
  t.regex(line, new RegExp(`\\] Limit exceeded: listener=watch protocol=udp src=127\\.0\\.0\\.1:${client.localPort} reason=bandwidth_limit action=log_only$`));
  t.is(field(line, 'count'), undefined);
  t.is(denyLines(daemon, 'watch', 'bandwidth_limit').length, 1, 'once per address per window, not per datagram');
  t.is(sourcePort(line), client.localPort);
});
