-- Everything a sealer needs in one round trip: the chain length, its last hash,
-- up to ARGV[1] audit bodies that are not chained yet, and the log's length.
-- KEYS[1] the chain, KEYS[2] the audit log
local sealed = redis.call("LLEN", KEYS[1])
local last = ""
if sealed > 0 then
  last = redis.call("LINDEX", KEYS[1], sealed - 1)
end
local bodies = redis.call("LRANGE", KEYS[2], sealed, sealed + tonumber(ARGV[1]) - 1)
return {sealed, last, bodies, redis.call("LLEN", KEYS[2])}
