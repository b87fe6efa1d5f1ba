-- record_tool_outcome: append a nested tool call's outcome to its session, once.
-- Guarantees, atomically on the session's slot:
--   * the first outcome recorded for a call wins; later ones (a redelivered call that
--     ran again, a worker that took over) append nothing;
--   * a call that was cancelled records nothing, nor does a call of a cell that has
--     ended (its terminal event recorded: its open calls were cancelled, whether or not
--     the cancellation reached here) or of a finished session: the outcome, arriving
--     late, is dropped, and the call kept as cancelled (a redelivery does not run it);
--   * the reply for the host is stored with the record, so a worker that takes over a
--     call whose first worker died after recording can still answer the host.
-- Returns what holds afterwards (the stored reply, or "cancelled"), and the replies
-- stream of the session's current owner as its `meta` names it ("" if none): a new
-- owner that took the session over from a dead one gets the reply there.
-- KEYS: tools, events, meta, terminal
-- ARGV: call key, reply JSON, cell, then the outcome event's stream fields as
--       name/value pairs
local replies = redis.call('HGET', KEYS[3], 'replies') or ''
local state = redis.call('HGET', KEYS[1], ARGV[1])
if state then
  return {state, replies}
end
local finished = redis.call('HGET', KEYS[3], 'finished') == '1'
if finished or redis.call('HEXISTS', KEYS[4], ARGV[3]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], 'cancelled')
  if finished and redis.call('PTTL', KEYS[1]) < 0 then  -- (it expires with the rest)
    local left = redis.call('PTTL', KEYS[3])
    if left > 0 then redis.call('PEXPIRE', KEYS[1], left) end
  end
  return {'cancelled', replies}
end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {ARGV[2], replies}
