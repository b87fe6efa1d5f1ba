-- admit_cell: record a cell's admission (see `admit` in lib.lua) and the events of the
-- cell that follow it, atomically on the session's slot. Nothing is appended when the
-- admission is refused; a retried call appends nothing again.
-- KEYS: meta, events
-- ARGV: call_id, cell, admission token, n_events,
--       then per event: n_fields, field name/value pairs (the first is the admission)
local meta, events = KEYS[1], KEYS[2]
local batches = read_events(5, tonumber(ARGV[4]))
local admitted = admit(meta, events, ARGV[1], ARGV[2], ARGV[3], batches[1])
if type(admitted) == 'table' or admitted == 'again' then
  return admitted
end
for e = 2, #batches do redis.call('XADD', events, '*', unpack(batches[e])) end
return admitted
