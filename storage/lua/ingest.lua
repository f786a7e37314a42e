-- Ingest: for each request, resolve the user's active session for the port, dedup every item
-- against the session's state, allocate seqs, store the rows in the session's pending set (new
-- rows) or pending-edits hash (edits), and append references to them to the ingest stream, all
-- atomically. Called once per event-loop tick with every request collected in that tick.
--
-- Each row is stored once, in the pending set or hash: reads of the buffer (read your writes)
-- need them there by session and seq, and the stream entry only names them. Rows in both
-- places cost Valkey a second copy of every row in memory and in the AOF, about 5 us a
-- message (docs/benchmarks.md). The references of all requests go into one stream entry (a
-- few if there are very many), one field per session: 'r<n>' = 'sid seq seq ...' for new
-- rows, 'e<n>' = 'sid seq ...' for edits, plus a durable frame's 'n<n>' = notify token. The
-- writer reads the rows the entry names from the pending set and hash (storage/writer.py);
-- a row named but gone from them was already written and settled by a writer.
--
-- ARGV[1] is one MessagePack array (one argument, so the client packs it in a single C call;
-- MessagePack rather than JSON because the row tails are JSON text, which JSON would escape
-- quote by quote and cjson unescape at about twice cmsgpack's cost):
--   [prefix, ttl_seconds, now_ms, [request, ...], max_buffered]
--   request = [user, port, notify, [dedup_key, content_hash, new_id, row_tail, ...]]
-- row_tail is the JSON object of the row without its opening brace and without the fields this
-- script owns (sid, seq, id, at, ed); the script prepends those (storage/rows.py owns the
-- format). Key names come from `key_names`, generated from storage/keys.py and prepended.
--
-- Buffer cap: `buffered` counts the rows in every pending set and pending-edits hash
-- (this script adds what it adds there, the writer's settle.lua subtracts what it removes).
-- Once it is at max_buffered or more (0: no cap), a request is refused whole, nothing stored,
-- unless every item is a duplicate (a resend of what is already stored takes no room and is
-- answered as usual). The cap is checked before each request, so a call can end above it by
-- at most one request's items.
--
-- Every session that gets a row is added to `port_buffered(user, port)`, the set of the port's
-- sessions with rows in the buffer (its reads look there; settle.lua removes a session once it
-- holds none).
--
-- Reply: a MessagePack array, one array per request (storage/rows.py: Reply and Flag):
--   ["S"]              no active session is known for (user, port): resolve it, then retry
--   ["L", sid]         the session's dedup state is not in Redis: load it, then retry
--   ["O", buffered]    the buffer is at its cap (buffered rows): nothing stored, retry later
--   ["K", sid, entry, seq1, id1, flag1, seq2, ...]
--                      entry is the stream entry id ('' when nothing new was stored); flag is
--                      0 stored, 1 duplicate (already committed), 2 updated (an edit),
--                      3 duplicate whose original is still only in the buffer
local input = cmsgpack.unpack(ARGV[1])
local key = key_names(input[1])
local stream, ttl = key.stream(), input[2]
local now = string.format('%d', input[3])
local max_buffered = input[5]
local counter = key.buffered()
-- Rows in the buffer before this call (read only when capped) and rows this call added to it.
local buffered = max_buffered > 0 and tonumber(redis.call('GET', counter) or '0') or 0
local added = 0
local out = {}
-- The entry being assembled: its notify fields, the seqs it names per session (`named`, in
-- the order `named_sids`), and the replies waiting for its id.
local fields, named, named_sids, waiting = {}, {}, {}, {}
-- Lua's unpack() takes at most ~8000 values: start a new entry before that (the notify fields
-- of a call of many durable frames).
local MAX_FIELDS = 6000

local function append_entry()
  for _, sid in ipairs(named_sids) do
    local seqs = named[sid]
    if #seqs.new > 0 then
      fields[#fields + 1] = 'r' .. #fields
      fields[#fields + 1] = sid .. ' ' .. table.concat(seqs.new, ' ')
    end
    if #seqs.edits > 0 then
      fields[#fields + 1] = 'e' .. #fields
      fields[#fields + 1] = sid .. ' ' .. table.concat(seqs.edits, ' ')
    end
  end
  if #fields > 0 then
    local id = redis.call('XADD', stream, '*', unpack(fields))
    for _, reply in ipairs(waiting) do
      reply[3] = id
    end
  end
  fields, named, named_sids, waiting = {}, {}, {}, {}
end

-- Name a stored row in the entry: `kind` is 'new' or 'edits'.
local function name_row(sid, kind, seq)
  local seqs = named[sid]
  if seqs == nil then
    seqs = {new = {}, edits = {}}
    named[sid] = seqs
    named_sids[#named_sids + 1] = sid
  end
  seqs[kind][#seqs[kind] + 1] = seq
end

-- Rows to publish, per session channel, in seq order: live subscribers get them from here.
-- Only channels somebody listens to (`published[channel]` is false for the others): a
-- subscriber reads storage only once Redis has confirmed its subscription (gateway/ws/hub.py),
-- and this script runs wholly before or after that, so a row not published here for want of
-- listeners is in storage by the time one reads it. Most sessions have nobody watching:
-- this saves copying their rows into a publication nobody gets.
local published, channels = {}, {}

local function publish_row(channel, row)
  local rows = published[channel]
  if rows == nil then
    rows = redis.call('PUBSUB', 'NUMSUB', channel)[2] > 0 and {}
    published[channel] = rows
    if rows then
      channels[#channels + 1] = channel
    end
  end
  if rows then
    rows[#rows + 1] = row
  end
end

-- Whether every item is already stored with the same content (a resend): then it stores
-- nothing and is answered even when the buffer is full.
local function all_duplicates(state, items)
  for i = 1, #items, 4 do
    local known = redis.call('HGET', state, items[i])
    if not known or string.match(known, '^%d+|[^|]+|([^|]+)|') ~= items[i + 1] then
      return false
    end
  end
  return true
end

-- Looked up once per call, not once per request: a call holds many requests of the same few
-- ports, and nothing in it changes which session is active or drops a session's state.
-- `active` maps 'user port' to the session id (false: none); `loaded` maps a session id to
-- whether its state exists. The states to re-expire (`expire`) and the sessions to add to
-- each port's buffered set (`buffered_in`, in the order `buffered_at`) are written once, at
-- the end.
local active, loaded, expire, buffered_in, buffered_at = {}, {}, {}, {}, {}

local function active_session(user, port)
  local name = user .. ' ' .. port
  local sid = active[name]
  if sid == nil then
    sid = redis.call('GET', key.active(user, port))
    active[name] = sid
  end
  return sid
end

local function state_loaded(sid, state)
  local known = loaded[sid]
  if known == nil then
    known = redis.call('EXISTS', state) == 1
    loaded[sid] = known
  end
  return known
end

for r = 1, #input[4] do
  local request = input[4][r]
  local user, notify, items = request[1], request[3], request[4]
  local port = string.format('%d', request[2])
  local sid = active_session(user, port)
  local state = sid and key.session_state(sid)
  if not sid then
    out[#out + 1] = {'S'}
  elseif not state_loaded(sid, state) then
    out[#out + 1] = {'L', sid}
  elseif max_buffered > 0 and buffered + added >= max_buffered
      and not all_duplicates(state, items) then
    out[#out + 1] = {'O', buffered + added}
  else
    if #fields + 4 * #named_sids + 6 > MAX_FIELDS then
      append_entry()
    end
    local pending = key.pending(sid)
    local edits = key.pending_edits(sid)
    local channel = key.session_channel(sid)
    local reply = {'K', sid, ''}
    local stored = false
    for i = 1, #items, 4 do
      local dk, hash, id, tail = items[i], items[i + 1], items[i + 2], items[i + 3]
      local known = redis.call('HGET', state, dk)
      if not known then
        local seq = redis.call('HINCRBY', state, '#', 1)
        redis.call('HSET', state, dk, seq .. '|' .. id .. '|' .. hash .. '|' .. now)
        local row = '{"sid":"' .. sid .. '","seq":' .. seq .. ',"id":"' .. id ..
          '","at":' .. now .. ',"ed":null,' .. tail
        added = added + redis.call('ZADD', pending, seq, row)
        name_row(sid, 'new', seq)
        publish_row(channel, row)
        stored = true
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
          -- 1 when the message had no buffered edit yet, 0 when this one replaces it.
          added = added + redis.call('HSET', edits, seq, row)
          name_row(sid, 'edits', seq)
          publish_row(channel, row)
          stored = true
          reply[#reply + 1] = tonumber(seq)
          reply[#reply + 1] = oid
          reply[#reply + 1] = 2
        end
      end
    end
    if stored then
      local at = key.port_buffered(user, port)
      local members = buffered_in[at]
      if not members then
        members = {}
        buffered_in[at] = members
        buffered_at[#buffered_at + 1] = at
      end
      members[sid] = true
      waiting[#waiting + 1] = reply
      if notify ~= '' then
        fields[#fields + 1] = 'n' .. #fields
        fields[#fields + 1] = notify
      end
    end
    expire[state] = true
    out[#out + 1] = reply
  end
end
append_entry()
for _, at in ipairs(buffered_at) do
  for sid in pairs(buffered_in[at]) do
    redis.call('SADD', at, sid)
  end
end
for state in pairs(expire) do
  redis.call('EXPIRE', state, ttl)
end
if added > 0 then
  redis.call('INCRBY', counter, added)
end
for _, channel in ipairs(channels) do
  redis.call('PUBLISH', channel, '[' .. table.concat(published[channel], ',') .. ']')
end
return cmsgpack.pack(out)
