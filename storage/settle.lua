-- After a commit: drop the written edits from their sessions' pending-edit hashes.
--
-- ARGV[1] is JSON: [[pending_edits_key, seq, sha1_of_row], ...]. An edit is removed only if it
-- is still the exact version that was written: when a newer edit of the same message replaced
-- it meanwhile, that one stays until its own entry is committed.
local rows = cjson.decode(ARGV[1])
local removed = 0
for _, row in ipairs(rows) do
  local key, seq, digest = row[1], string.format('%d', row[2]), row[3]
  local current = redis.call('HGET', key, seq)
  if current and redis.sha1hex(current) == digest then
    removed = removed + redis.call('HDEL', key, seq)
  end
end
return removed
