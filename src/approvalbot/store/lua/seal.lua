-- Extend the hash chain, but only if nobody extended it first.
--
-- Hashes are a pure function of the log, so two sealers racing compute the same
-- values; whichever arrives second finds the chain already longer and does nothing.
-- KEYS[1] the chain (list of hex hashes, aligned with the audit log)
-- ARGV[1] the chain length the caller started from; ARGV[2..] the next hashes
local length = redis.call("LLEN", KEYS[1])
if length ~= tonumber(ARGV[1]) then
  return length
end
for i = 2, #ARGV do
  redis.call("RPUSH", KEYS[1], ARGV[i])
end
return length + #ARGV - 1
