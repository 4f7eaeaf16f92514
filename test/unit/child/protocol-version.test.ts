/**
 * A child started by a supervisor of another IPC protocol version (new files on disk under a
 * running daemon) says so and exits with EX_CONFIG, rather than sending reports the supervisor
 * would misread.
 */
import test from 'ava';
import { fork } from 'node:child_process';
import { EXIT_CHILD_CONFIG, PROTOCOL_VERSION } from '../../../src/ipc/protocol.js';
import { CHILD_ENTRY } from '../../../src/supervisor/child-process.js';
import { alive, waitFor } from '../../helpers/wait-for.js';

test('a pp:start of another protocol version gets a pp:fatal naming both versions, then exit 78', async (t) => {
  const child = fork(CHILD_ENTRY, ['--listener', 'version-check'], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
  t.teardown(() => {
    if (child.pid !== undefined && alive(child.pid)) child.kill('SIGKILL');
  });
  const messages: Array<{ type?: string; code?: string; message?: string }> = [];
  child.on('message', (message) => messages.push(message as (typeof messages)[number]));
  let exitCode = null as number | null;
  child.on('exit', (code) => (exitCode = code));
  child.send({ type: 'pp:start', v: PROTOCOL_VERSION - 1, config: {}, socket_family: 'IPv4', hold: false });
  await waitFor(() => exitCode !== null, 'the child to exit');
  t.is(exitCode, EXIT_CHILD_CONFIG);
  const fatal = messages.find((m) => m.type === 'pp:fatal');
  t.is(fatal?.code, 'PP_ERR_CHILD_PROTOCOL');
  t.regex(fatal?.message ?? '', new RegExp(`v${PROTOCOL_VERSION - 1}, this child v${PROTOCOL_VERSION}: restart the daemon`));
});
