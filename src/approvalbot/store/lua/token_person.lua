-- An approver token and its person in one round trip (authentication reads both on every call).
--
-- KEYS[1]  the token's key
-- ARGV[1]  the prefix of person keys (keys.person(""))
--
-- Returns {} for an unknown token, else {token record, person document or nil}. The person key is
-- built here from the record's person_id: approvalbot runs against one Redis node, never a cluster.
local record = redis.call("GET", KEYS[1])
if not record then
  return {}
end
local ok, parsed = pcall(cjson.decode, record)
local person = false
if ok and type(parsed) == "table" and type(parsed["person_id"]) == "string" then
  person = redis.call("GET", ARGV[1] .. parsed["person_id"])
end
return {record, person}
