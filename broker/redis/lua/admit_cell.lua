-- admit_cell: record a cell's admission (see `admit` in lib.lua) and the events of the
-- cell that follow it, atomically on the session's slot. Nothing is appended when the
-- admission is refused. A retried call appends the events after the admission again
-- (its batch may have grown since the reply was lost; readers drop a repeated
-- (cell, seq)).
-- Refused (error FENCED) when the writer's fencing token is not the session's latest.
-- KEYS: meta, events
-- ARGV: fencing token, call_id, cell, admission token, n_events,
--       then per event: n_fields, field name/value pairs (the first is the admission)
local meta, events = KEYS[1], KEYS[2]
local refused = fenced(meta, ARGV[1])
if refused then return redis.error_reply(refused) end
local batches = read_events(6, tonumber(ARGV[5]))
local admitted = admit(meta, events, ARGV[2], ARGV[3], ARGV[4], batches[1], false)
if type(admitted) == 'table' then
  return admitted
end
for e = 2, #batches do redis.call('XADD', events, '*', unpack(batches[e])) end
return admitted
