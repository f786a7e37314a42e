-- Ingest: for each request, resolve the user's active session for the port, dedup every item
-- against the session's state, allocate seqs, and append the stored rows to the ingest stream,
-- all atomically. Called once per event-loop tick with every request collected in that tick.
--
-- ARGV[1] is one JSON document (one argument, so the client packs it in a single C call):
--   [prefix, stream, ttl_seconds, now_ms, [request, ...]]
--   request = [user, port, notify, [dedup_key, content_hash, new_id, row_tail, ...]]
-- row_tail is the JSON object of the row without its opening brace and without the fields this
-- script owns (sid, seq, id, at, ed); the script prepends those.
--
-- Reply: a JSON array, one array per request:
--   ["S"]              no active session is known for (user, port): resolve it, then retry
--   ["L", sid]         the session's dedup state is not in Redis: load it, then retry
--   ["K", sid, entry, seq1, id1, flag1, seq2, ...]
--                      entry is the stream entry id ('' when nothing new was stored); flag is
--                      0 stored, 1 duplicate (already committed), 2 updated (an edit),
--                      3 duplicate whose original is still only in the buffer
local input = cjson.decode(ARGV[1])
local prefix, stream, ttl = input[1], input[2], input[3]
local now = string.format('%d', input[4])
local out = {}
for r = 1, #input[5] do
  local request = input[5][r]
  local user, port, notify, items = request[1], string.format('%d', request[2]), request[3], request[4]
  local sid = redis.call('GET', prefix .. 'active:' .. user .. ':' .. port)
  local state = sid and (prefix .. 's:' .. sid)
  if not sid then
    out[#out + 1] = {'S'}
  elseif redis.call('EXISTS', state) == 0 then
    out[#out + 1] = {'L', sid}
  else
    local pending = prefix .. 'b:' .. sid
    local reply = {'K', sid, ''}
    local fields = {}
    for i = 1, #items, 4 do
      local dk, hash, id, tail = items[i], items[i + 1], items[i + 2], items[i + 3]
      local known = redis.call('HGET', state, dk)
      if not known then
        local seq = redis.call('HINCRBY', state, '#', 1)
        redis.call('HSET', state, dk, seq .. '|' .. id .. '|' .. hash .. '|' .. now)
        local row = '{"sid":"' .. sid .. '","seq":' .. seq .. ',"id":"' .. id ..
          '","at":' .. now .. ',"ed":null,' .. tail
        redis.call('ZADD', pending, seq, row)
        fields[#fields + 1] = 'r' .. #fields
        fields[#fields + 1] = row
        reply[#reply + 1] = seq
        reply[#reply + 1] = id
        reply[#reply + 1] = 0
      else
        local seq, oid, ohash, oat = string.match(known, '^(%d+)|([^|]+)|([^|]+)|(%d+)$')
        if ohash == hash then
          local buffered = redis.call('ZCOUNT', pending, seq, seq) > 0
          reply[#reply + 1] = tonumber(seq)
          reply[#reply + 1] = oid
          reply[#reply + 1] = buffered and 3 or 1
        else
          -- Same client id, new content: an edit in place, keeping id, seq and created_at.
          redis.call('HSET', state, dk, seq .. '|' .. oid .. '|' .. hash .. '|' .. oat)
          local row = '{"sid":"' .. sid .. '","seq":' .. seq .. ',"id":"' .. oid ..
            '","at":' .. oat .. ',"ed":' .. now .. ',' .. tail
          redis.call('ZREMRANGEBYSCORE', pending, seq, seq)
          redis.call('ZADD', pending, seq, row)
          fields[#fields + 1] = 'r' .. #fields
          fields[#fields + 1] = row
          reply[#reply + 1] = tonumber(seq)
          reply[#reply + 1] = oid
          reply[#reply + 1] = 2
        end
      end
    end
    if #fields > 0 then
      reply[3] = redis.call('XADD', stream, '*', 'n', notify, unpack(fields))
    end
    redis.call('EXPIRE', state, ttl)
    out[#out + 1] = reply
  end
end
return cjson.encode(out)
