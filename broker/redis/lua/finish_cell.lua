-- finish_cell: record a cell's terminal event; the first terminal event wins.
-- Guarantees, atomically on the session's slot:
--   * a cell not admitted yet is admitted first (`admit` in lib.lua): when that is
--     refused nothing is appended and the error is returned. It is admitted even after
--     the session's shutdown began: the cell existed (it ran), and its completion then
--     loses to its termination by the shutdown, which the caller records next;
--   * at most one terminal event per cell is appended (completed or terminated);
--   * a completion after shutdown began loses (nothing appended; "shutdown" returned);
--   * the completion's stored writes are merged into the session's stored values
--     only together with a winning completion (keys written by the cell only), and
--     each such merge counts one more `stored_version` in meta;
--   * the events before the terminal one are appended first, in order, whatever the
--     outcome; the events after it (its delivery) only with a winning terminal event.
--   * nothing is written (error FENCED) when the writer's fencing token is not the
--     session's latest;
--   * an ended cell is marked open (`meta`'s `open:<cell>`) until its `cell_closed`.
-- Returns the terminal kind that holds for the cell afterwards, or "shutdown".
-- KEYS: terminal, events, stored, meta
-- ARGV: fencing token, cell, kind ("completed" | "terminated"), n_events, terminal
--       index (1-based), exec call id and admission token if the first event is the
--       cell's admission (else "" and ""),
--       then per event: n_fields, field name/value pairs,
--       then the stored writes as key/value pairs
local terminal, events, stored, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local refused = fenced(meta, ARGV[1])
if refused then return redis.error_reply(refused) end
local cell, kind, call_id, token = ARGV[2], ARGV[3], ARGV[6], ARGV[7]
local n_events, at = tonumber(ARGV[4]), tonumber(ARGV[5])
local batches, pos = read_events(8, n_events)
local first = 1
if call_id ~= '' then
  local admitted = admit(meta, events, call_id, cell, token, batches[1], true)
  if type(admitted) == 'table' then
    return admitted
  end
  if admitted == 'again' and redis.call('HEXISTS', terminal, cell) == 1 then
    return redis.call('HGET', terminal, cell)  -- this very call, retried: recorded already
  end
  first = 2
end
for e = first, at - 1 do redis.call('XADD', events, '*', unpack(batches[e])) end
local existing = redis.call('HGET', terminal, cell)
if existing then
  return existing
end
if kind == 'completed' and redis.call('HGET', meta, 'shutdown') == '1' then
  return 'shutdown'
end
redis.call('HSET', meta, 'open:' .. cell, '1')  -- until its close (lib.lua's note_closed)
redis.call('HINCRBY', meta, 'live', -1)
for e = at, n_events do
  redis.call('XADD', events, '*', unpack(batches[e]))
  note_closed(meta, batches[e])
end
redis.call('HSET', terminal, cell, kind)
if kind == 'completed' and pos <= #ARGV then
  -- In batches: unpack() of more than about 8,000 values fails (Lua's C stack), and a
  -- script that fails midway keeps what it wrote (the completion, without its writes).
  local batch = {}
  for i = pos, #ARGV do
    batch[#batch + 1] = ARGV[i]
    if #batch == 2000 or i == #ARGV then
      redis.call('HSET', stored, unpack(batch))
      batch = {}
    end
  end
  redis.call('HINCRBY', meta, 'stored_version', 1)
end
return kind
