-- Append a signed checkpoint, unless one at the same or a later sequence number is already there.
--
-- Checkpoints are made by any process (ticker, CLI); this keeps the list strictly
-- increasing in seq, and refuses a checkpoint whose hash is not the chain's hash
-- at that seq (a stale or wrong head is never signed into the list).
-- KEYS[1] the checkpoints list   KEYS[2] the chain
-- ARGV[1] seq   ARGV[2] hash   ARGV[3] the checkpoint record (JSON)
-- ARGV[4] the last checkpoint as the caller read it ("" for none): the new one names it as `prev`,
--         so it is appended only if that is still the last one.
-- Returns 1 when appended, 0 when not.
local seq = tonumber(ARGV[1])
local last = redis.call("LINDEX", KEYS[1], -1)
if (last or "") ~= ARGV[4] then
  return 0
end
if last then
  local ok, decoded = pcall(cjson.decode, last)
  if ok and type(decoded) == "table" and tonumber(decoded.seq) and tonumber(decoded.seq) >= seq then
    return 0
  end
end
if redis.call("LINDEX", KEYS[2], seq - 1) ~= ARGV[2] then
  return 0
end
redis.call("RPUSH", KEYS[1], ARGV[3])
return 1
