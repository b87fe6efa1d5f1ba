-- claim_lease: make `owner` the one process that serves a session.
-- Guarantees, atomically on the session's slot:
--   * a lease held by another owner is left alone: returns {'owned', that owner};
--   * a lease `owner` holds already is extended: returns {'held', its token};
--   * otherwise (no lease, or it expired) the session's fencing token (meta `fence`)
--     goes up by one and `owner` holds the lease with it: returns {'claimed', token}.
--     Every write of an older token is refused from then on (`fenced` in lib.lua).
-- KEYS: lease, meta
-- ARGV: owner, time to live (ms)
local held = redis.call('GET', KEYS[1])
if held then
  local owner, token = string.match(held, '^(%S+) (%d+)$')
  if owner ~= ARGV[1] then return {'owned', owner} end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'held', token}
end
local token = redis.call('HINCRBY', KEYS[2], 'fence', 1)
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return {'claimed', tostring(token)}
