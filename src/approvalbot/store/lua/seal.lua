-- Extend the hash chain, but only if nobody extended it first, and only over the records the
-- caller hashed.
--
-- Hashes are a pure function of the log, so two sealers racing compute the same
-- values; whichever arrives second finds the chain already longer and does nothing.
-- After a failover the log on the new primary may differ past some point from the one the
-- caller read (records the old primary had not replicated, then new ones): the SHA-1 of the
-- last body the caller hashed must match the log's record at that position, else nothing is
-- written and -1 is returned (the caller re-reads).
-- KEYS[1] the chain (list of hex hashes, aligned with the audit log)   KEYS[2] the audit log
-- ARGV[1] the chain length the caller started from; ARGV[2] the SHA-1 (hex) of the body of the
-- last record the caller hashed; ARGV[3..] the next hashes
local length = redis.call("LLEN", KEYS[1])
if length ~= tonumber(ARGV[1]) then
  return length
end
local count = #ARGV - 2
local last = redis.call("LINDEX", KEYS[2], length + count - 1)
if not last or redis.sha1hex(last) ~= ARGV[2] then
  return -1
end
for i = 3, #ARGV do
  redis.call("RPUSH", KEYS[1], ARGV[i])
end
return length + count
