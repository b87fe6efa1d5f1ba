-- append: append events of one session in order, unless the writer was fenced off.
-- Guarantees: all of the events are appended, or none (error FENCED) when the writer's
-- fencing token is not the session's latest. A retry after a lost reply appends them
-- again (readers drop a repeated (cell, seq)). A finished session's log takes nothing
-- more (a late write, such as a tool worker's retried one, is dropped: 0 returned).
-- KEYS: meta, events
-- ARGV: fencing token, n_events, then per event: n_fields, field name/value pairs
local meta, events = KEYS[1], KEYS[2]
local refused = fenced(meta, ARGV[1])
if refused then return redis.error_reply(refused) end
if redis.call('HGET', meta, 'finished') == '1' then return 0 end
local batches = read_events(3, tonumber(ARGV[2]))
for e = 1, #batches do
  redis.call('XADD', events, '*', unpack(batches[e]))
  note_closed(meta, batches[e])
end
return #batches
