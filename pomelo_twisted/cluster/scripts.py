"""The Lua scripts that keep the uid directory consistent (docs/cluster.md, "Redis keys").

Each runs atomically in Redis, so concurrent logins on several nodes are serialised. Keys,
with ``P`` the cluster prefix:

  - ``P:nodes`` SET of node ids; ``P:n:<node>`` the node's liveness key (a TTL);
  - ``P:s:<server id>`` which node holds a server id (same TTL);
  - ``P:u:<uid>`` HASH, one field ``<node>|<sid>`` per session (value: bind time, ms);
  - ``P:ni:<node>`` SET of ``<sid> <uid>``: the node's index, to remove its entries at once;
  - ``P:c:<name>`` SET of member uids of a global channel;
  - ``P:epoch`` a random value written once: if it changes, Redis lost its data.

Scripts compute some keys from data (a dead node's index), which is fine on one primary and
would not be on Redis Cluster (which txredisapi does not speak anyway). Never ``KEYS``.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

__all__ = [
    "BIND",
    "CODEC_CHECK",
    "HEARTBEAT",
    "PUSH",
    "REAP",
    "REAP_DEAD",
    "RESYNC",
    "SESSIONS",
    "UNBIND",
    "Script",
]


class Script(NamedTuple):
    """A Lua script and its SHA1 (for EVALSHA)."""

    source: bytes
    sha: str


def _script(source: str) -> Script:
    data = source.strip().encode()
    return Script(data, hashlib.sha1(data).hexdigest())


# Remove every entry of node ARGV[2] (prefix ARGV[1]) from the directory, by its index.
_FORGET = """
local function forget(prefix, node)
  local index = prefix .. ':ni:' .. node
  for _, entry in ipairs(redis.call('SMEMBERS', index)) do
    local space = string.find(entry, ' ', 1, true)
    if space then
      local sid = string.sub(entry, 1, space - 1)
      redis.call('HDEL', prefix .. ':u:' .. string.sub(entry, space + 1), node .. '|' .. sid)
    end
  end
  redis.call('DEL', index)
end
"""

_LIVE = """
local function node_of(field)
  return string.match(field, '^(.*)|[^|]*$')
end
local live_cache = {}
local function live(prefix, node)
  local ok = live_cache[node]
  if ok == nil then
    ok = redis.call('EXISTS', prefix .. ':n:' .. node) == 1
    live_cache[node] = ok
  end
  return ok
end
"""

#: KEYS: P:s:<server id>, P:n:<node>, P:nodes, P:epoch. ARGV: node, ttl ms, node info, a
#: new epoch. Refreshes the node's keys while it holds its server id. Returns {the server
#: id's holder, 1 if the node's liveness key was still there else 0, the epoch}. A node whose
#: key expired (it stalled longer than the TTL, and may have been reaped) must rewrite its
#: entries; an epoch that changed means Redis lost its data (the epoch key is never deleted).
HEARTBEAT = _script("""
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[4], epoch)
end
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  return {owner, 0, epoch}
end
local alive = redis.call('EXISTS', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return {ARGV[1], alive, epoch}
""")

#: KEYS: P:nodes. ARGV: prefix, this node's codec fingerprint. Returns {node, fingerprint}
#: of a live node that encodes differently (other routes, dictionary or protos), or {}.
CODEC_CHECK = _script("""
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local info = redis.call('GET', ARGV[1] .. ':n:' .. node)
  if info then
    local ok, decoded = pcall(cjson.decode, info)
    if ok and type(decoded) == 'table' and decoded['codec'] ~= nil
        and decoded['codec'] ~= ARGV[2] then
      return {node, tostring(decoded['codec'])}
    end
  end
end
return {}
""")

#: KEYS: P:u:<uid>, P:ni:<node>. ARGV: prefix, node, sid, uid, policy, now ms.
#: Drops fields of dead nodes; refuses under reject-new while another live session holds
#: the uid; else records the session. Returns {accepted (0/1), {live other fields...}}.
BIND = _script(
    _LIVE
    + """
local me = ARGV[2] .. '|' .. ARGV[3]
local holders = {}
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if field ~= me then
    local node = node_of(field)
    if node and live(ARGV[1], node) then
      holders[#holders + 1] = field
    else
      redis.call('HDEL', KEYS[1], field)
    end
  end
end
if ARGV[5] == 'reject-new' and #holders > 0 then
  return {0, holders}
end
redis.call('HSET', KEYS[1], me, ARGV[6])
redis.call('SADD', KEYS[2], ARGV[3] .. ' ' .. ARGV[4])
return {1, holders}
"""
)

#: ARGV: prefix, this node, a push's package, uid... Publishes, in the same round trip as the
#: lookup, one push envelope (envelope.py's layout) to each other live node holding some of
#: the uids. Returns {uids on another live node whose inbox was read, envelopes published,
#: envelopes nobody read}.
PUSH = _script(
    _LIVE
    + """
local prefix, me, payload = ARGV[1], ARGV[2], ARGV[3]
local reached, by_node, order = {}, {}, {}
for i = 4, #ARGV do
  local uid = ARGV[i]
  local seen = {}
  for _, field in ipairs(redis.call('HKEYS', prefix .. ':u:' .. uid)) do
    local node = node_of(field)
    if node and node ~= me and not seen[node] and live(prefix, node) then
      seen[node] = true
      if not by_node[node] then
        by_node[node] = {}
        order[#order + 1] = node
      end
      local uids = by_node[node]
      uids[#uids + 1] = uid
    end
  end
end
local unread = 0
for _, node in ipairs(order) do
  local header = cjson.encode({['from'] = me, uids = by_node[node]})
  local envelope = 'PT1P' .. struct.pack('>I4', #header) .. header .. payload
  if redis.call('PUBLISH', prefix .. ':in:' .. node, envelope) > 0 then
    for _, uid in ipairs(by_node[node]) do
      reached[#reached + 1] = uid
    end
  else
    unread = unread + 1
  end
end
return {reached, #order, unread}
"""
)

#: KEYS: P:u:<uid>, P:ni:<node of the session>. ARGV: node|sid, sid uid.
UNBIND = _script("""
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
""")

#: ARGV: prefix, uid... Returns, per uid, the fields (node|sid) of its sessions on live nodes.
SESSIONS = _script(
    _LIVE
    + """
local out = {}
for i = 2, #ARGV do
  local fields = {}
  for _, field in ipairs(redis.call('HKEYS', ARGV[1] .. ':u:' .. ARGV[i])) do
    local node = node_of(field)
    if node and live(ARGV[1], node) then
      fields[#fields + 1] = field
    end
  end
  out[#out + 1] = fields
end
return out
"""
)

#: KEYS: P:n:<node>, P:nodes, P:ni:<node>. ARGV: prefix, node, ttl ms, info, now ms, then
#: sid, uid pairs: what the node really has. Replaces what the directory says about the node.
RESYNC = _script(
    _FORGET
    + """
forget(ARGV[1], ARGV[2])
redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[2])
for i = 6, #ARGV, 2 do
  redis.call('HSET', ARGV[1] .. ':u:' .. ARGV[i + 1], ARGV[2] .. '|' .. ARGV[i], ARGV[5])
  redis.call('SADD', KEYS[3], ARGV[i] .. ' ' .. ARGV[i + 1])
end
return (#ARGV - 5) / 2
"""
)

#: KEYS: P:n:<node>, P:nodes, P:s:<server id>. ARGV: prefix, node.
#: A graceful stop: the node's entries, keys and server id claim go at once.
REAP = _script(
    _FORGET
    + """
forget(ARGV[1], ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[3]) == ARGV[2] then
  redis.call('DEL', KEYS[3])
end
return 1
"""
)

#: KEYS: P:nodes. ARGV: prefix. Removes the entries of every node whose liveness key has
#: expired; returns their ids. Idempotent, so every node may run it.
REAP_DEAD = _script(
    _FORGET
    + """
local dead = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. ':n:' .. node) == 0 then
    forget(ARGV[1], node)
    redis.call('SREM', KEYS[1], node)
    dead[#dead + 1] = node
  end
end
return dead
"""
)
