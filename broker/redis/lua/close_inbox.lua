-- close_inbox: a worker that stops takes what is left in its inbox and deletes it.
-- Guarantees: atomically, the entries after `after` are returned and the stream is
-- deleted; clients add to an inbox with NOMKSTREAM, so nothing can land in it later
-- (a client finds it gone and looks for the session's new owner).
-- KEYS: the inbox
-- ARGV: the last entry id the worker read ("0-0": none)
local left = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+')
redis.call('DEL', KEYS[1])
return left
