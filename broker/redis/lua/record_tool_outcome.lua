-- record_tool_outcome: append a nested tool call's outcome to its session, once.
-- Guarantees, atomically on the session's slot:
--   * the first outcome recorded for a call wins; later ones (a redelivered call that
--     ran again, a worker that took over) append nothing;
--   * a call that was cancelled records nothing;
--   * the reply for the host is stored with the record, so a worker that takes over a
--     call whose first worker died after recording can still answer the host.
-- Returns what holds afterwards: the stored reply, or "cancelled".
-- KEYS: tools, events
-- ARGV: call key, reply JSON, then the outcome event's stream fields as name/value pairs
local state = redis.call('HGET', KEYS[1], ARGV[1])
if state then
  return state
end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return ARGV[2]
