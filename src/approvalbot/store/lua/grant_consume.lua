-- Mark a grant used and record that in the audit log, in one step.
--
-- The marker is SET NX, so of any number of concurrent consumers exactly one
-- succeeds, and the grant.consumed record exists if and only if the marker does.
-- KEYS[1] the used-marker   KEYS[2] the audit log   KEYS[3] the request's audit index
-- ARGV[1] marker value   ARGV[2] marker TTL (seconds)   ARGV[3] the audit body
-- Returns {"ok", seq} or {"used", existing marker value}.
if not redis.call("SET", KEYS[1], ARGV[1], "NX", "EX", ARGV[2]) then
  return {"used", redis.call("GET", KEYS[1]) or ""}
end
local seq = redis.call("RPUSH", KEYS[2], ARGV[3])
redis.call("RPUSH", KEYS[3], seq)
return {"ok", seq}
