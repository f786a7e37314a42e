-- Presence: which IDE connections serve which ports, and the online/offline transitions.
--
-- ARGV[1] is JSON: [op, prefix, now_ms, ttl_ms, entries] where entries are [user, port, conn].
--   op 'up':    the connections serve their ports until now + ttl (also the heartbeat)
--   op 'down':  the connections are gone
--   op 'sweep': drop every connection whose time ran out (its process died); entries unused
-- Key names come from `key_names`, generated from storage/keys.py and prepended.
-- Per (user, port) a sorted set holds connection ids by expiry; a global sorted set indexes
-- `user|port|conn` by expiry for the sweep. A port is online while one of its connections
-- has not expired. Each transition is published on the user's channel as
-- {"presence": {"port": P, "online": B}}; the reply lists the transitions.
local input = cjson.decode(ARGV[1])
local op, prefix, now, ttl, entries = input[1], input[2], input[3], input[4], input[5]
local key = key_names(prefix)
local index = key.presence()
local changes = {}

local port_key = key.presence_port

local function online(key)
  return redis.call('ZCOUNT', key, '(' .. now, '+inf') > 0
end

local function announce(user, port, is_online)
  local event = '{"presence":{"port":' .. port .. ',"online":' .. tostring(is_online) .. '}}'
  redis.call('PUBLISH', key.user_channel(user), event)
  changes[#changes + 1] = {user, tonumber(port), is_online}
end

local gone = {}  -- (user, port) announced offline by this call

-- Remove one connection; the port goes offline when no live connection is left. A port whose
-- connections all expired is announced offline when the last of them is removed (by the
-- sweep, or by its own 'down'), at most once per call.
local function drop(user, port, conn)
  local key = port_key(user, port)
  -- Either record counts: the port's set expires by itself (PEXPIRE in 'up') when no sweep
  -- ran in time (a busy or paused process), and its offline must still be announced.
  local in_port = redis.call('ZREM', key, conn) == 1
  local in_index = redis.call('ZREM', index, user .. '|' .. port .. '|' .. conn) == 1
  local existed = in_port or in_index
  local id = user .. '|' .. port
  if existed and not online(key) and not gone[id] then
    gone[id] = true
    announce(user, port, false)
  end
end

if op == 'up' then
  for _, e in ipairs(entries) do
    local user, port, conn = e[1], string.format('%d', e[2]), e[3]
    local key = port_key(user, port)
    local was = online(key)
    redis.call('ZADD', key, now + ttl, conn)
    redis.call('PEXPIRE', key, ttl * 2)
    redis.call('ZADD', index, now + ttl, user .. '|' .. port .. '|' .. conn)
    if not was then
      announce(user, port, true)
    end
  end
elseif op == 'down' then
  for _, e in ipairs(entries) do
    drop(e[1], string.format('%d', e[2]), e[3])
  end
elseif op == 'sweep' then
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now)) do
    local user, port, conn = string.match(member, '^(.*)|(%d+)|([^|]+)$')
    drop(user, port, conn)
  end
end
return cjson.encode(changes)
