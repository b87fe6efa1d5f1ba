-- finish_session: record the end of a session's shutdown and start its retention.
-- Guarantees: unless the writer was fenced off (error FENCED: nothing written), the
-- event is appended and every key of the session expires `retention` seconds later.
-- KEYS: meta, events, then the other keys that expire with them
-- ARGV: fencing token, retention in seconds, then the event's stream fields
local refused = fenced(KEYS[1], ARGV[1])
if refused then return redis.error_reply(refused) end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
redis.call('HSET', KEYS[1], 'finished', '1')
redis.call('DEL', KEYS[#KEYS])  -- the lease: nobody owns a finished session
for i = 1, #KEYS - 1 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
return 1
