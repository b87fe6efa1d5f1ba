-- begin_shutdown: mark a session as shutting down, once.
-- Guarantees: after this script, admit_cell refuses the session and completions lose
-- to termination; the shutdown_begun event is appended only by the first call.
-- Refused (error FENCED) when the writer's fencing token is not the session's latest.
-- Returns 1 if this call began the shutdown, 0 if it had begun already.
-- KEYS: meta, events
-- ARGV: fencing token, then the event's stream fields as name/value pairs
local refused = fenced(KEYS[1], ARGV[1])
if refused then return redis.error_reply(refused) end
if redis.call('HGET', KEYS[1], 'shutdown') == '1' then
  return 0
end
redis.call('HSET', KEYS[1], 'shutdown', '1')
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
return 1
