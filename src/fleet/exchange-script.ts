/**
 * The one call a shared listener's child makes to the store per sync interval: a Lua script that
 * records this host's own counts of a batch of addresses and answers, for each, what the rest of
 * the fleet counts. One round trip and one atomic step however many addresses (up to a batch).
 *
 * What the store holds (KEY = key_prefix:listener):
 * - `KEY:addr:ADDRESS`, a hash with one field per host (instance): "RUN ATTEMPTS BYTES OPEN MS" —
 *   that host's own counts as of store time MS, written whole each time (never incremented). A
 *   write is thus idempotent: a call that timed out and ran later, or the same counts sent again
 *   after an outage, count once. A host's attempts and bytes stay counted until they are older
 *   than their window (each host sends its counts again as its windows slide, so they decay);
 *   its open connections count only while the host is alive.
 * - `KEY:alive:INSTANCE` = RUN, set with a short expiry on every call: the heartbeat. RUN is
 *   random per child process, so the open connections a crashed child last reported stop counting
 *   once its heartbeat expires, and a restarted child's counts are not mistaken for them.
 * Keys expire by themselves (each address's hash some time after its last write), so a fleet that
 * goes away leaves nothing behind; a host writing zeros removes its field.
 *
 * Store time (TIME) is used throughout, so the hosts' clocks need not agree.
 */

/** ARGV: base, instance, run, alive ms, key ms, attempts window ms, bandwidth window ms, n, then n × (address, attempts, bytes, open). */
export const EXCHANGE_SCRIPT = `
local base = ARGV[1]
local me = ARGV[2]
local run = ARGV[3]
local attemptsWindow = tonumber(ARGV[6])
local bytesWindow = tonumber(ARGV[7])
local n = tonumber(ARGV[8])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', base .. ':alive:' .. me, run, 'PX', ARGV[4])
local alive = {}
local out = {}
local arg = 9
for k = 1, n do
  local address = ARGV[arg]
  local attempts = ARGV[arg + 1]
  local bytes = ARGV[arg + 2]
  local open = ARGV[arg + 3]
  arg = arg + 4
  local key = base .. ':addr:' .. address
  if attempts == '0' and bytes == '0' and open == '0' then
    redis.call('HDEL', key, me)
  else
    redis.call('HSET', key, me, run .. ' ' .. attempts .. ' ' .. bytes .. ' ' .. open .. ' ' .. now)
    redis.call('PEXPIRE', key, ARGV[5])
  end
  local fields = redis.call('HGETALL', key)
  local peerAttempts, peerBytes, peerOpen = 0, 0, 0
  for f = 1, #fields, 2 do
    local host = fields[f]
    if host ~= me then
      local r, a, b, o, at = string.match(fields[f + 1], '^(%S+) (%d+) (%d+) (%d+) (%d+)$')
      if r then
        local age = now - tonumber(at)
        local live = alive[host]
        if live == nil then
          live = redis.call('GET', base .. ':alive:' .. host) or false
          alive[host] = live
        end
        local current = live == r
        if age < attemptsWindow then peerAttempts = peerAttempts + tonumber(a) end
        if age < bytesWindow then peerBytes = peerBytes + tonumber(b) end
        if current then peerOpen = peerOpen + tonumber(o) end
        if not current and age >= attemptsWindow and age >= bytesWindow then redis.call('HDEL', key, host) end
      else
        redis.call('HDEL', key, host)
      end
    end
  end
  out[3 * k - 2] = peerAttempts
  out[3 * k - 1] = peerBytes
  out[3 * k] = peerOpen
end
return out
`;

/** The fixed part of the script's arguments for one listener's child. */
export interface ExchangeParams {
  /** key_prefix:listener */
  readonly base: string;
  readonly instance: string;
  /** Random per child process. */
  readonly run: string;
  readonly aliveMs: number;
  readonly keyMs: number;
  /** 0 stands for "no such limit": its counts are then never summed (a window of 0 ms). */
  readonly attemptsWindowMs: number;
  readonly bytesWindowMs: number;
}

/** One address's own counts, as the limiter gives them (policy's SharedCounts). */
export interface OwnCounts {
  readonly address: string;
  readonly attempts: number;
  readonly bytes: number;
  readonly open: number;
}

/** The script's ARGV for `entries`. */
export function exchangeArguments(params: ExchangeParams, entries: readonly OwnCounts[]): string[] {
  const args = [
    params.base,
    params.instance,
    params.run,
    String(params.aliveMs),
    String(params.keyMs),
    String(params.attemptsWindowMs),
    String(params.bytesWindowMs),
    String(entries.length),
  ];
  for (const entry of entries) args.push(entry.address, String(entry.attempts), String(entry.bytes), String(entry.open));
  return args;
}
