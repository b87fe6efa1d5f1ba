-- renew_lease: extend the lease its owner holds with `token`.
-- Guarantees: the lease is extended if the owner still holds it, or taken back with the
-- same token if it expired while nobody else claimed the session (the token is still the
-- latest: no write was refused); returns 1 then. Returns 0 if a newer owner claimed the
-- session (the caller is fenced off), 2 if its shutdown finished (nobody owns it now:
-- the renewal met a session its owner was finishing), 3 if Redis lost the session's
-- data (no fence: the owner's writes are refused as LOST).
-- KEYS: lease, meta
-- ARGV: owner, token, time to live (ms)
local mine = ARGV[1] .. ' ' .. ARGV[2]
local held = redis.call('GET', KEYS[1])
if held == mine then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
local finished = redis.call('HGET', KEYS[2], 'finished') == '1'
if not held and finished then return 2 end
-- No fence at all: Redis lost the session's data; its writes say so (LOST), not fenced.
if not held and not redis.call('HGET', KEYS[2], 'fence') then return 3 end
if not held and redis.call('HGET', KEYS[2], 'fence') == ARGV[2] then
  redis.call('SET', KEYS[1], mine, 'PX', ARGV[3])
  return 1
end
return 0
