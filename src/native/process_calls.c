/*
 * Two calls about the child process itself: trim() gives the C heap's free pages back after a
 * flood, loopTime() shares the event loop's clock with JavaScript. See each.
 */
#include "addon.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <uv.h>

/*
 * trim() -> 1 if memory went back to the system. After a flood, the freed per-session allocations
 * (ours and Node's, a few hundred bytes each, tens of thousands of them) sit in the C heap between
 * live ones, where free() cannot return them; glibc's malloc_trim gives their whole pages back.
 * The child calls it once per flood, after V8's full collections (src/child/memory-reclaimer.ts).
 */
static napi_value Trim(napi_env env, napi_callback_info info) {
  (void)info;
#ifdef __GLIBC__
  return int_value(env, malloc_trim(0));
#else
  return int_value(env, 0);
#endif
}

/*
 * loopTime() -> an ArrayBuffer over the event loop's own clock (uv_loop_t's `time`: milliseconds
 * as a uint64, the value uv_now() returns), or undefined where external buffers are refused. libuv
 * updates it at the start of each turn and right after each poll returns, so a read callback sees
 * the time its data arrived to the millisecond. JavaScript reads it as two 32-bit words: no call,
 * no system call (performance.now() costs ~590 instructions under callgrind, a clock_gettime and a
 * trip through C++). The loop lives as long as the process's main thread; the buffer owns nothing.
 * Call it once per process: V8 may refuse a second buffer over the same memory.
 */
static napi_value LoopTime(napi_env env, napi_callback_info info) {
  (void)info;
  uv_loop_t *loop;
  CALL(env, napi_get_uv_event_loop(env, &loop));
  napi_value buffer;
  if (napi_create_external_arraybuffer(env, &loop->time, sizeof(loop->time), NULL, NULL, &buffer) != napi_ok) {
    /* Leave no exception pending: the caller falls back to performance.now(). */
    napi_value ignored;
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) napi_get_and_clear_last_exception(env, &ignored);
    return NULL;
  }
  return buffer;
}

napi_status process_calls_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"trim", NULL, Trim, NULL, NULL, NULL, napi_enumerable, NULL},
    {"loopTime", NULL, LoopTime, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}
