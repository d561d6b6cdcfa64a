-- Apply one state transition of one request, and append its audit records, atomically.
--
-- KEYS[1]  the request hash (fields: doc, ver)
-- KEYS[2]  the audit log (list of canonical JSON bodies; position = sequence number)
-- KEYS[3]  the request's own list of audit sequence numbers
-- KEYS[4]  the idempotency key, or a dummy key when there is none
-- KEYS[5]  the audit hash chain (read only: to hand the caller what sealing needs)
-- KEYS[6..] index keys the plan refers to by position
-- ARGV[1]  expected version ("0": the request must not exist yet)
-- ARGV[2]  the new document (JSON)
-- ARGV[3]  the plan (JSON): zadd/zrem/zremrangebyscore/hincr on indexed keys, audit bodies, publish, idempotency
-- ARGV[4]  this commit attempt's nonce (kept as field "cid": recognises a retried, already-applied commit)
--
-- Returns {"ok", first_seq, last_seq, seal_hint}, {"conflict", current_version} or
-- {"duplicate", stored_value}. seal_hint is {chain length, last hash, unsealed bodies} when few
-- records wait to be chained, so the caller can seal without another read; else empty.
local plan = cjson.decode(ARGV[3])

if plan.idem then
  local existing = redis.call("GET", KEYS[4])
  if existing then
    return {"duplicate", existing}
  end
end

local current = redis.call("HGET", KEYS[1], "ver")
if (current or "0") ~= ARGV[1] then
  -- A retry (after a lost reply or a failover) of a commit that did apply: the request is exactly
  -- one version ahead and carries this attempt's nonce. Report success again, apply nothing twice.
  if tonumber(current or "0") == tonumber(ARGV[1]) + 1 and redis.call("HGET", KEYS[1], "cid") == ARGV[4] then
    local seq = tonumber(redis.call("LINDEX", KEYS[3], -1) or "0")
    return {"ok", seq, seq, {}}
  end
  return {"conflict", current or "0"}
end

local new_version = tonumber(ARGV[1]) + 1
redis.call("HSET", KEYS[1], "doc", ARGV[2], "ver", new_version, "cid", ARGV[4])

if plan.idem then
  redis.call("SET", KEYS[4], plan.idem[1], "EX", plan.idem[2])
end
for _, op in ipairs(plan.zadd or {}) do
  redis.call("ZADD", KEYS[op[1]], op[2], op[3])
end
for _, op in ipairs(plan.zrem or {}) do
  redis.call("ZREM", KEYS[op[1]], op[2])
end
for _, op in ipairs(plan.zremrangebyscore or {}) do
  redis.call("ZREMRANGEBYSCORE", KEYS[op[1]], op[2], op[3])
end
for _, op in ipairs(plan.hincr or {}) do
  redis.call("HINCRBY", KEYS[op[1]], op[2], op[3])
end

local first, last = 0, 0
for i, body in ipairs(plan.audit or {}) do
  last = redis.call("RPUSH", KEYS[2], body)
  if i == 1 then first = last end
  redis.call("RPUSH", KEYS[3], last)
end

for _, msg in ipairs(plan.publish or {}) do
  redis.call("PUBLISH", msg[1], msg[2])
end

local hint = {}
if last > 0 then
  local sealed = redis.call("LLEN", KEYS[5])
  if last - sealed <= 8 then
    local prev = ""
    if sealed > 0 then prev = redis.call("LINDEX", KEYS[5], sealed - 1) end
    hint = {sealed, prev, redis.call("LRANGE", KEYS[2], sealed, last - 1)}
  end
end
return {"ok", first, last, hint}
