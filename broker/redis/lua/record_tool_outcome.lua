-- record_tool_outcome: append a nested tool call's outcome to its session, once.
-- Guarantees, atomically on the session's slot:
--   * the first outcome recorded for a call wins; later ones (a redelivered call that
--     ran again, a worker that took over) append nothing;
--   * a call that was cancelled records nothing, nor does a finished session (its
--     shutdown ended its cells: the outcome, arriving late, is dropped as cancelled);
--   * the reply for the host is stored with the record, so a worker that takes over a
--     call whose first worker died after recording can still answer the host.
-- Returns what holds afterwards (the stored reply, or "cancelled"), and the replies
-- stream of the session's current owner as its `meta` names it ("" if none): a new
-- owner that took the session over from a dead one gets the reply there.
-- KEYS: tools, events, meta
-- ARGV: call key, reply JSON, then the outcome event's stream fields as name/value pairs
local replies = redis.call('HGET', KEYS[3], 'replies') or ''
local state = redis.call('HGET', KEYS[1], ARGV[1])
if state then
  return {state, replies}
end
if redis.call('HGET', KEYS[3], 'finished') == '1' then
  -- Kept as cancelled, so that a redelivery of the call does not run it again; it
  -- expires with the session's other keys.
  redis.call('HSET', KEYS[1], ARGV[1], 'cancelled')
  if redis.call('PTTL', KEYS[1]) < 0 then
    local left = redis.call('PTTL', KEYS[3])
    if left > 0 then redis.call('PEXPIRE', KEYS[1], left) end
  end
  return {'cancelled', replies}
end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {ARGV[2], replies}
