"""Per-user online state, updated exactly once per event by one Lua script per batch.

The state of a user is what ``cascade.data.features.user_state`` computes from their consumption
events, kept bounded so that inserting an event is exact in any arrival order:

- ``n``: how many consumption events (repeats counted);
- ``recent``: the newest ``RECENT_ITEMS_LEN`` events as (timestamp, item) pairs, ordered by
  ``(timestamp, item_id)`` newest first (``cascade.data.history.event_order``). An event older
  than the oldest kept pair of a full list can never be among the newest again, so dropping it
  is exact; a late event newer than it is inserted at its place.
- ``seen``: distinct items at their newest (timestamp, item), newest first, at most
  ``MAX_SEEN_ITEMS``. An item's key only grows, so an item pushed out of a full list stays out
  until an occurrence newer than the list's oldest key comes, which puts it back at its place.

So the state after a set of events is the same whatever their order (and equals ``user_state``
of the log: ``tests/events/test_state.py`` checks it on shuffled logs). Timestamps are integer
microseconds, as ``cascade.data.history.timestamps_us`` gives them.

A user the online store already knows (materialized from the offline snapshots) starts from its
Feast row (``seed``): its items get timestamps older than any real event (-1, -2, ... in list
order), i.e. the snapshot is treated as older than every streamed event. A streamed event
stamped before the snapshot's last interaction is therefore placed ahead of the snapshot's
items; exact again after the next data rebuild.

The script, per batch, atomically: ``SET <prefix>d:<event_id> NX EX <dedup ttl>`` per event (a
repeat changes nothing), updates the state of the users with consumption events, bumps the CTR
counters (hash ``<prefix>ctr``, fields ``tier\\tmodel_version\\timpressions|clicks``) of
impressions and clicks joined to their served record (``<prefix>s:<request_id>``), and returns
the state of every user with a consumption event in the batch (duplicates included, so a crash
between this step and the Feast write heals on redelivery) with a write stamp that grows by at
least 1 µs per write: Feast's Redis store skips a write not newer than the stored one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from cascade.runtime.schema import MAX_SEEN_ITEMS, RECENT_ITEMS_LEN
from events.contract import Event, ServedRecord

if TYPE_CHECKING:
    import redis.asyncio as aioredis

KEY_PREFIX = "cascade:events:"  # + Feast project + ":": the consumer's own keys in the online Redis
CTR_HASH = "ctr"
UNKNOWN = "unknown"  # tier and model version of an impression or click without a served record
CTR_KINDS = {"impression": "impressions", "click": "clicks"}

_SCRIPT = r"""
local prefix = ARGV[1]
local dedup_ttl = tonumber(ARGV[2])
local state_ttl = tonumber(ARGV[3])
local now_us = tonumber(ARGV[4])
local recent_len = tonumber(ARGV[5])
local seen_len = tonumber(ARGV[6])
local events = cmsgpack.unpack(ARGV[7])
local seeds = cmsgpack.unpack(ARGV[8])

local function newer(t1, i1, t2, i2)
  return t1 > t2 or (t1 == t2 and i1 > i2)
end

local function insert_recent(st, t, i)
  local rt, ri = st[3], st[4]
  local n = #rt
  local p = n + 1
  for k = 1, n do
    if newer(t, i, rt[k], ri[k]) then p = k break end
  end
  if p > recent_len then return end
  table.insert(rt, p, t)
  table.insert(ri, p, i)
  if #rt > recent_len then rt[#rt] = nil; ri[#ri] = nil end
end

local function insert_seen(st, t, i)
  local stt, sti = st[5], st[6]
  local n = #sti
  for k = 1, n do
    if sti[k] == i then
      if t <= stt[k] then return end
      table.remove(stt, k)
      table.remove(sti, k)
      n = n - 1
      break
    end
  end
  local p = n + 1
  for k = 1, n do
    if newer(t, i, stt[k], sti[k]) then p = k break end
  end
  if p > seen_len then return end
  table.insert(stt, p, t)
  table.insert(sti, p, i)
  if #sti > seen_len then stt[#stt] = nil; sti[#sti] = nil end
end

local function load(user)
  local raw = redis.call('GET', prefix .. 'u:' .. user)
  if raw then return cmsgpack.unpack(raw) end
  local st = {0, 0, {}, {}, {}, {}}
  local seed = seeds[user]
  if seed then
    st[1] = seed[1]
    for k, item in ipairs(seed[2]) do st[3][k] = -k; st[4][k] = item end
    for k, item in ipairs(seed[3]) do st[5][k] = -k; st[6][k] = item end
  end
  return st
end

local states, touched, ctr = {}, {}, {}
local applied, dups = 0, 0
for _, e in ipairs(events) do
  local id, user, item, ts, consumed, kind, req = e[1], e[2], e[3], e[4], e[5], e[6], e[7]
  if consumed == 1 and not states[user] then
    states[user] = load(user)
    touched[#touched + 1] = user
  end
  if redis.call('SET', prefix .. 'd:' .. id, '1', 'NX', 'EX', dedup_ttl) then
    applied = applied + 1
    if consumed == 1 then
      local st = states[user]
      st[1] = st[1] + 1
      insert_recent(st, ts, item)
      insert_seen(st, ts, item)
    end
    if kind ~= '' then
      local label = 'unknown\tunknown'
      if req ~= '' then
        local served = redis.call('GET', prefix .. 's:' .. req)
        if served then label = served end
      end
      label = label .. '\t' .. kind
      redis.call('HINCRBY', prefix .. 'ctr', label, 1)
      ctr[#ctr + 1] = label
    end
  else
    dups = dups + 1
  end
end

local out = {}
for _, user in ipairs(touched) do
  local st = states[user]
  st[2] = math.max(now_us, st[2] + 1)
  local key = prefix .. 'u:' .. user
  if state_ttl > 0 then
    redis.call('SET', key, cmsgpack.pack(st), 'EX', state_ttl)
  else
    redis.call('SET', key, cmsgpack.pack(st))
  end
  out[#out + 1] = {user, st[1], st[2], st[4], st[6]}
end
return cmsgpack.pack({applied, dups, out, ctr})
"""


# For each user: nothing when its state exists, else its Feast row (HMGET of the given fields):
# the seed lookup in one round trip. KEYS: state key, Feast hash key, per user; ARGV: fields.
_SEED_SCRIPT = r"""
local out = {}
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    out[#out + 1] = false
  else
    out[#out + 1] = redis.call('HMGET', KEYS[i + 1], unpack(ARGV))
  end
end
return out
"""


def key_prefix(project: str) -> str:
    """Prefix of the consumer's keys (state ``u:``, dedup ``d:``, served ``s:``, ``ctr``) for
    a Feast project: one data set's online store, one set of keys."""
    return f"{KEY_PREFIX}{project}:"


def ts_us(timestamp: float) -> int:
    """Epoch seconds as integer microseconds: the one rounding, online and offline."""
    return round(timestamp * 1_000_000)


@dataclass(frozen=True)
class UserState:
    """A user's features after a batch, and the stamp to write them with (µs)."""

    user_id: int
    interaction_count: int
    write_us: int
    recent_items: list[int]
    seen_items: list[int]


@dataclass(frozen=True)
class ApplyResult:
    applied: int
    duplicates: int
    users: list[UserState]
    ctr: list[tuple[str, str, str]]  # (tier, model_version, impressions|clicks) per counted event


Seed = tuple[int, Sequence[int], Sequence[int]]  # count, recent items, seen items (newest first)


class StateStore:
    """The per-user state and dedup keys under ``prefix`` in one Redis (see module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        dedup_ttl_s: int,
        state_ttl_s: int = 0,
        served_ttl_s: int = 3600,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.dedup_ttl_s = dedup_ttl_s
        self.state_ttl_s = state_ttl_s
        self.served_ttl_s = served_ttl_s
        self._script = client.register_script(_SCRIPT)
        self._seed_script = client.register_script(_SEED_SCRIPT)

    def user_key(self, user_id: int) -> str:
        return f"{self.prefix}u:{user_id}"

    async def users_without_state(self, user_ids: Sequence[int]) -> list[int]:
        """The users among ``user_ids`` with no state yet (they need a seed)."""
        if not user_ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for uid in user_ids:
                pipe.exists(self.user_key(uid))
            found = await pipe.execute()
        return [uid for uid, n in zip(user_ids, found, strict=True) if not n]

    async def feast_rows_of_new_users(
        self, user_ids: Sequence[int], feast_keys: Sequence[bytes], fields: Sequence[bytes]
    ) -> dict[int, list[bytes | None]]:
        """For the users without state: the raw ``HMGET`` of ``fields`` on their Feast hash
        (``feast_keys``, aligned with ``user_ids``), in one round trip."""
        if not user_ids:
            return {}
        keys: list[str | bytes] = []
        for uid, fkey in zip(user_ids, feast_keys, strict=True):
            keys += [self.user_key(uid), fkey]
        raw = await self._seed_script(keys=keys, args=list(fields))
        return {uid: row for uid, row in zip(user_ids, raw, strict=True) if row}

    async def apply(
        self, events: Sequence[Event], *, seeds: dict[int, Seed], now_us: int
    ) -> ApplyResult:
        """Run the batch script (see the module docstring)."""
        rows = [
            [
                e.event_id,
                str(e.user_id),
                e.item_id,
                ts_us(e.timestamp),
                1 if e.consumed else 0,
                CTR_KINDS.get(e.type, ""),
                e.request_id or "",
            ]
            for e in events
        ]
        packed_seeds = {
            str(u): [int(c), [int(i) for i in r], [int(i) for i in s]]
            for u, (c, r, s) in seeds.items()
        }
        raw = await self._script(
            args=[
                self.prefix,
                self.dedup_ttl_s,
                self.state_ttl_s,
                now_us,
                RECENT_ITEMS_LEN,
                MAX_SEEN_ITEMS,
                msgpack.packb(rows),
                msgpack.packb(packed_seeds),
            ]
        )
        applied, dups, users, ctr = msgpack.unpackb(raw, strict_map_key=False)
        return ApplyResult(
            applied=int(applied),
            duplicates=int(dups),
            users=[
                UserState(int(u), int(n), int(w), _ints(r), _ints(s)) for u, n, w, r, s in users
            ],
            ctr=[_ctr_label(label) for label in ctr],
        )

    async def store_served(self, records: Sequence[ServedRecord]) -> None:
        """Remember which tier and model version served each request (for ``served_ttl_s``)."""
        if not records:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for r in records:
                pipe.set(
                    f"{self.prefix}s:{r.request_id}",
                    f"{_clean(r.tier)}\t{_clean(r.model_version)}",
                    ex=self.served_ttl_s,
                )
            await pipe.execute()


def _ints(values: Any) -> list[int]:
    # cmsgpack packs an empty Lua table as a map
    return [int(v) for v in values] if isinstance(values, list) else []


def _clean(label: str) -> str:
    return label.replace("\t", " ")


def _ctr_label(label: bytes | str) -> tuple[str, str, str]:
    text = label.decode() if isinstance(label, bytes) else label
    tier, version, kind = text.split("\t")
    return tier, version, kind
