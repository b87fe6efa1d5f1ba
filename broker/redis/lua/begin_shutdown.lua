-- begin_shutdown: mark a session as shutting down, once.
-- Guarantees: after this script, admit_cell refuses the session and completions lose
-- to termination; the shutdown_begun event is appended only by the first call.
-- Returns 1 if this call began the shutdown, 0 if it had begun already.
-- KEYS: meta, events
-- ARGV: the event's stream fields as name/value pairs
if redis.call('HGET', KEYS[1], 'shutdown') == '1' then
  return 0
end
redis.call('HSET', KEYS[1], 'shutdown', '1')
redis.call('XADD', KEYS[2], '*', unpack(ARGV))
return 1
