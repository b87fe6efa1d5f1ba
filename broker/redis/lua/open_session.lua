-- open_session: record that an owner opened a session, and read where its log stands.
-- Guarantees, atomically on the session's slot:
--   * nothing is written (error FENCED) when the writer's fencing token is not the
--     session's latest;
--   * the events are appended unless the session's shutdown finished (a finished
--     session stays finished: opening it again records nothing);
--   * returns {next_cell, stored_version, shutdown, finished} as read from meta, then
--     the ids of the admitted cells that have no terminal event (their owner stopped
--     while they ran: the new owner recovers them), and "~" and the id of each cell
--     that ended and is not closed (its answer may not have been given);
--   * the owner's replies stream (unless "") becomes the session's `replies`: tool
--     workers send the outcomes of its calls there from now on, whoever sent them.
-- KEYS: meta, events, terminal
-- ARGV: fencing token, replies stream, n_events, then per event: n_fields, field
--   name/value pairs
local meta, events, terminal = KEYS[1], KEYS[2], KEYS[3]
local refused = fenced(meta, ARGV[1])
if refused then return redis.error_reply(refused) end
local state = redis.call('HMGET', meta, 'next_cell', 'stored_version', 'shutdown', 'finished')
if state[4] ~= '1' then
  if ARGV[2] ~= '' then redis.call('HSET', meta, 'replies', ARGV[2]) end
  local batches = read_events(4, tonumber(ARGV[3]))
  for e = 1, #batches do redis.call('XADD', events, '*', unpack(batches[e])) end
end
-- Unended cells are among the newest admitted: the last 10 000 ids are looked at.
-- (Lua writes numbers beyond 1e14 inexactly: a session that far on is not looked at.)
local last = tonumber(state[1] or '0')
local cell = last
if last >= 1e14 then cell = 0 end
while cell >= 1 and cell > last - 10000 do
  local id = tostring(cell)
  if redis.call('HEXISTS', terminal, id) == 0 then
    if redis.call('HEXISTS', meta, 'cell:' .. id) == 1 then state[#state + 1] = id end
  elseif redis.call('HEXISTS', meta, 'open:' .. id) == 1 then
    state[#state + 1] = '~' .. id
  end
  cell = cell - 1
end
return state
