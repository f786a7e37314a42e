-- Reload a session's dedup state into Redis (after it expired, or after Redis lost it).
--
-- KEYS[1]: the session state hash. ARGV: ttl_seconds, last_seq, then dedup_key, value pairs.
-- Called in chunks; `last_seq` is set by the final chunk (ARGV[2] ~= '') and only if the state
-- is still absent, so a racing loader or a fresh ingest is never overwritten. Until `#` is set,
-- the ingest script treats the state as missing and stores nothing for the session.
if redis.call('HEXISTS', KEYS[1], '#') == 1 then
  return 0
end
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], '#', ARGV[2])
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
