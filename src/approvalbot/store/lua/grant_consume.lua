-- Mark a grant used and record that in the audit log, in one step.
--
-- The marker is SET NX, so of any number of concurrent consumers exactly one
-- succeeds, and the grant.consumed record exists if and only if the marker does.
-- A revoked grant (its agent was revoked) is refused in the same step, so a
-- redemption racing the revocation either happened before it or not at all.
-- KEYS[1] the used-marker   KEYS[2] the audit log   KEYS[3] the request's audit index
-- KEYS[4] the revoked grants (sorted set of jti)
-- ARGV[1] marker value   ARGV[2] marker TTL (seconds)   ARGV[3] the audit body   ARGV[4] the grant's jti
-- Returns {"ok", seq}, {"used", existing marker value} or {"revoked", ""}.
if redis.call("ZSCORE", KEYS[4], ARGV[4]) then
  return {"revoked", ""}
end
if not redis.call("SET", KEYS[1], ARGV[1], "NX", "EX", ARGV[2]) then
  return {"used", redis.call("GET", KEYS[1]) or ""}
end
local seq = redis.call("RPUSH", KEYS[2], ARGV[3])
redis.call("RPUSH", KEYS[3], seq)
return {"ok", seq}
