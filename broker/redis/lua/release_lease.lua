-- release_lease: give a session up (a worker handing it over, a finished session).
-- Guarantees: the lease is deleted only if `owner` holds it with `token`; the fencing
-- token stays, so the next owner's is newer. Returns 1 if it was deleted.
-- KEYS: lease
-- ARGV: owner, token
if redis.call('GET', KEYS[1]) == ARGV[1] .. ' ' .. ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
