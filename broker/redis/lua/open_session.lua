-- open_session: record that an owner opened a session, and read where its log stands.
-- Guarantees, atomically on the session's slot:
--   * nothing is written (error FENCED) when the writer's fencing token is not the
--     session's latest;
--   * the events are appended unless the session's shutdown finished (a finished
--     session stays finished: opening it again records nothing);
--   * returns {next_cell, stored_version, shutdown, finished} as read from meta.
-- KEYS: meta, events
-- ARGV: fencing token, n_events, then per event: n_fields, field name/value pairs
local meta, events = KEYS[1], KEYS[2]
if fenced(meta, ARGV[1]) then return redis.error_reply('FENCED') end
local state = redis.call('HMGET', meta, 'next_cell', 'stored_version', 'shutdown', 'finished')
if state[4] ~= '1' then
  local batches = read_events(3, tonumber(ARGV[2]))
  for e = 1, #batches do redis.call('XADD', events, '*', unpack(batches[e])) end
end
return state
