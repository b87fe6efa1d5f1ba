-- lib: functions shared by admit_cell and finish_cell (the journal prepends this file).

-- The event batches in ARGV from `pos` on: per event, its field count, then its stream
-- field name/value pairs. Returns the batches and the position after them.
local function read_events(pos, n_events)
  local batches = {}
  for e = 1, n_events do
    local n = tonumber(ARGV[pos]) * 2
    local fields = {}
    for i = 1, n do fields[i] = ARGV[pos + i] end
    batches[e] = fields
    pos = pos + n + 1
  end
  return batches, pos
end

-- Record the admission of cell `cell` for exec call `call_id` (its event's fields:
-- `fields`; `token` tells this admission from any other). The session actor chose the
-- id; the log holds it to these rules:
--   * idempotent per exec call id: returns 'again' if this very admission is recorded
--     already (a retried call), error EXISTS <cell> if the call id has another cell;
--   * refused (error SHUTTING_DOWN) once the session's shutdown began;
--   * ids are "1", "2", ... with no gap and never wrap: the id must be the one after
--     `next_cell` (error CONFLICT: another process admitted cells of this session), and
--     when the counter cannot grow (2^63-1, Redis's integer limit) error EXHAUSTED.
-- Returns 'admitted' after appending the event.
local function admit(meta, events, call_id, cell, token, fields)
  local existing = redis.call('HGET', meta, 'call:' .. call_id)
  if existing then
    if existing == cell .. ' ' .. token then return 'again' end
    return redis.error_reply('EXISTS ' .. string.match(existing, '^%S+'))
  end
  if redis.call('HGET', meta, 'shutdown') == '1' then
    return redis.error_reply('SHUTTING_DOWN')
  end
  local grown = redis.pcall('HINCRBY', meta, 'next_cell', 1)
  if type(grown) == 'table' and grown.err then
    return redis.error_reply('EXHAUSTED')
  end
  -- compared as text: Lua numbers are doubles, ids go up to 2^63-1
  if redis.call('HGET', meta, 'next_cell') ~= cell then
    redis.call('HINCRBY', meta, 'next_cell', -1)
    return redis.error_reply('CONFLICT')
  end
  redis.call('XADD', events, '*', unpack(fields))
  redis.call('HSET', meta, 'call:' .. call_id, cell .. ' ' .. token)
  return 'admitted'
end
