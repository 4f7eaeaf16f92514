/**
 * The IPC messages' guards: what a child accepts from the supervisor. A message that fails its
 * guard is ignored, so a guard that is too strict leaves a child waiting forever: the cases here
 * are the ones the supervisor really sends, and the ones it must never be fooled by.
 */
import test from 'ava';
import { isChildMessage, isSupervisorMessage, isTargetStates, PROTOCOL_VERSION } from '../../../src/ipc/protocol.js';

const START = { type: 'pp:start', v: PROTOCOL_VERSION, config: {}, socket_family: 'IPv4', socket_fd: null, hold: false, worker: { index: 0, count: 1 }, connection_total: null };

test('pp:start and pp:begin carry the target states a previous child reported, or null', (t) => {
  t.true(isSupervisorMessage({ ...START, target_states: null }));
  t.true(isSupervisorMessage({ ...START, target_states: { '127.0.0.1:80': 0, 'db.example:5432': 1 } }));
  t.true(isSupervisorMessage({ ...START, target_states: null, worker: { index: 1, count: 3 }, connection_total: { fd: 5, slot: 7 } }), 'a second worker of three');
  t.false(isSupervisorMessage({ ...START, target_states: null, worker: { index: 3, count: 3 } }), 'a worker past its group');
  t.false(isSupervisorMessage({ ...START, target_states: null, connection_total: { fd: 1, slot: 0 } }), 'the total on stdout');
  t.true(isSupervisorMessage({ type: 'pp:begin', snapshot: null, target_states: null }));
  t.true(isSupervisorMessage({ type: 'pp:begin', snapshot: {}, target_states: { 'a:1': 1 } }));
});

test('target states: only 0 and 1 per address; anything else is refused', (t) => {
  t.true(isTargetStates(null));
  t.true(isTargetStates({}));
  t.false(isTargetStates(undefined));
  t.false(isTargetStates({ 'a:1': 2 }));
  t.false(isTargetStates({ 'a:1': 'down' }));
  t.false(isSupervisorMessage({ ...START }), 'a start without the field is from another version');
  t.false(isSupervisorMessage({ type: 'pp:begin', snapshot: null, target_states: { 'a:1': true } }));
});

test('pp:report carries what its connection tuples leave out: the listener, its protocol and t0', (t) => {
  const report = { type: 'pp:report', listener_name: 'web', protocol: 'tcp', t0: 1_764_161_234_000, events: [[0, 0, '127.0.0.1', 1, '127.0.0.1', 2, 0, 0, 0]], stats: {}, dropped_events: 0 };
  t.true(isChildMessage(report));
  t.false(isChildMessage({ ...report, t0: undefined }), 'a report from a child of another version');
  t.false(isChildMessage({ ...report, listener_name: undefined }));
});
