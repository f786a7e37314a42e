#!lua flags=no-writes
-- Read-your-writes for a port: the rows still in the buffer of each of the port's sessions
-- that has any (the set the ingest script fills and settle.lua empties), read at one instant.
--
-- KEYS[1] is the port's set (Keys.port_buffered); ARGV = [prefix, limit]. Key names come from
-- `key_names`, generated from storage/keys.py and prepended.
-- Reply: [sid, [row, ...], [seq, row, seq, row, ...], sid, ...]: per session its newest
-- `limit` new rows (by seq) and every buffered edit.
local key, limit = key_names(ARGV[1]), tonumber(ARGV[2])
local out = {}
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  out[#out + 1] = sid
  out[#out + 1] = redis.call('ZREVRANGE', key.pending(sid), 0, limit - 1)
  out[#out + 1] = redis.call('HGETALL', key.pending_edits(sid))
end
return out
