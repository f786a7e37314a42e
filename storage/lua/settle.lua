-- After a commit: drop the written rows from the buffer, keep the buffered-row count exact, and
-- forget sessions that have nothing left in the buffer. Atomic, so an ingest call that stores
-- a row meanwhile runs wholly before (the session keeps rows) or wholly after (it adds the
-- session back): a session that holds rows never leaves its port's set.
--
-- ARGV[1] is JSON: [counter_key, [session, ...]]
--   session = [pending_key, pending_edits_key, port_set_key, session_id,
--              [low1, high1, low2, high2, ...], [seq1, sha1_of_row1, seq2, ...]]
-- New rows go by inclusive seq ranges. An edit is removed only if it is still the exact
-- version that was written: when a newer edit of the same message replaced it meanwhile, that
-- one stays until its own entry is committed.
--
-- Replays are harmless: rows already removed are not counted again (the counts come from what
-- ZREMRANGEBYSCORE and HDEL really removed). The counter is clamped at 0, since rows stored
-- before it existed are removed without ever having been counted.
--
-- Reply: the number of rows removed.
local input = cjson.decode(ARGV[1])
local counter = input[1]
local removed = 0
for _, session in ipairs(input[2]) do
  local pending, edits, port_set, sid = session[1], session[2], session[3], session[4]
  local runs, written_edits = session[5], session[6]
  for i = 1, #runs, 2 do
    removed = removed + redis.call('ZREMRANGEBYSCORE', pending, runs[i], runs[i + 1])
  end
  for i = 1, #written_edits, 2 do
    local seq, digest = string.format('%d', written_edits[i]), written_edits[i + 1]
    local current = redis.call('HGET', edits, seq)
    if current and redis.sha1hex(current) == digest then
      removed = removed + redis.call('HDEL', edits, seq)
    end
  end
  -- Empty sorted sets and hashes do not exist: nothing of the session is left in the buffer.
  if redis.call('EXISTS', pending, edits) == 0 then
    redis.call('SREM', port_set, sid)
  end
end
if removed > 0 then
  local left = redis.call('DECRBY', counter, removed)
  if left < 0 then
    redis.call('SET', counter, 0)
  end
end
return removed
