-- lib: functions shared by the scripts that write a session's log (the journal prepends
-- this file).

-- Whether the writer holding fencing token `token` may still write the session: `meta`'s
-- `fence` counts the changes of owner (claim_lease.lua), and a writer whose token is not
-- the latest was fenced off by a newer owner. An empty token is a writer without a lease
-- (an import, a test of the log alone). Returns the refusal: FENCED, or LOST when the
-- session has no fence at all (Redis lost its data: every owner sets one); else false.
local function fenced(meta, token)
  if token == '' then return false end
  local fence = redis.call('HGET', meta, 'fence')
  if not fence then return 'LOST' end
  if fence ~= token then return 'FENCED' end
  return false
end

-- A cell that ended keeps `meta`'s `open:<cell>` until its `cell_closed` is appended:
-- a new owner finds an ended cell whose answer may not have been given (field names
-- and values: `codec.encode_flat`; [4] is the event's type, [6] its cell).
local function note_closed(meta, batch)
  if batch[4] == 'cell_closed' then redis.call('HDEL', meta, 'open:' .. batch[6]) end
end

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

-- Whether decimal text `a` (no leading zeros) is a greater number than `b`: ids go up
-- to 2^63-1, which Lua numbers (doubles) cannot hold exactly.
local function greater(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

-- Record the admission of cell `cell` for exec call `call_id` (its event's fields:
-- `fields`; `token` tells this admission from any other). The session actor chose the
-- id; the log holds it to these rules:
--   * idempotent: returns 'again' if this very admission (cell, exec call id and
--     `token`, which tells one admission from any other) is recorded already (a
--     retried call). An exec call id may be used again, for a new cell;
--   * refused (error SHUTTING_DOWN) once the session's shutdown began, unless
--     `ending_by_shutdown`: the cell existed before (it ran) and the shutdown ends it,
--     so its admission goes in the log with its termination;
--   * an id is admitted once (error CONFLICT: another process admitted it for this
--     session) and is at most 2^63-1, Redis's integer limit (error EXHAUSTED). Cells
--     may be admitted out of creation order (each at its first append); `next_cell`
--     keeps the highest id. An id is skipped only when a cell that had it failed
--     before it could be admitted, as the session's counter had counted it.
-- Returns 'admitted' after appending the event.
local function admit(meta, events, call_id, cell, token, fields, ending_by_shutdown)
  local existing = redis.call('HGET', meta, 'cell:' .. cell)
  if existing == call_id .. ' ' .. token then return 'again' end
  if redis.call('HGET', meta, 'shutdown') == '1' and not ending_by_shutdown then
    return redis.error_reply('SHUTTING_DOWN')
  end
  if greater(cell, '9223372036854775807') then  -- MAX_CELL_ID in journal.py
    return redis.error_reply('EXHAUSTED')
  end
  if existing then
    return redis.error_reply('CONFLICT')
  end
  if greater(cell, redis.call('HGET', meta, 'next_cell') or '0') then
    redis.call('HSET', meta, 'next_cell', cell)
  end
  redis.call('XADD', events, '*', unpack(fields))
  redis.call('HSET', meta, 'cell:' .. cell, call_id .. ' ' .. token)
  redis.call('HINCRBY', meta, 'live', 1)  -- cells admitted and not ended (finish_cell.lua)
  return 'admitted'
end
