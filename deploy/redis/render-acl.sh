#!/bin/sh
# Render Redis' ACL file (users.acl) from one password file per user: Redis stores and compares
# only the sha256 of each password (`#<hex>`), so the rendered file holds no password.
#
#   deploy/redis/render-acl.sh DIR > users.acl
#
# DIR holds the files `gateway`, `materializer`, `events` and `admin`, each one password (a trailing
# newline is ignored). docker-compose runs this inside the Redis container on its secrets
# (/run/secrets); for Kubernetes run it once and store the output as the Secret
# cascade-redis-acl (docs/deployment.md, docs/security.md has the roles).
#
# Users (Redis ACLs do not scope databases: roles are told apart by key patterns; Feast's keys
# have no prefix, the gateway's own keys start with cascade:):
#   default       off: no anonymous access
#   probe         no password, PING only: liveness and readiness probes
#   gateway       read (HMGET/GET...) on every key = the feature store; read-write only on its
#                 rate-limit buckets (cascade:ratelimit:*, the EVALSHA token bucket) and breaker
#                 state (cascade:gateway:*), and the model rollout's state, history, counters
#                 and controller lock under cascade:gateway:rollout (Lua CAS: EVAL, RPUSH/LTRIM,
#                 HINCRBY, MULTI/EXEC); no key deletion, no FLUSH*, no CONFIG, no KEYS
#   materializer  the jobs (cascade features apply/materialize): read-write on every key
#                 (HSET/EXPIRE/SCAN/DEL/HKEYS/HDEL), nothing @dangerous or @admin (no FLUSHALL,
#                 FLUSHDB, CONFIG, KEYS, DEBUG, SHUTDOWN...), no scripts, no pub/sub
#   events        the events consumer (python -m events): as materializer (it writes features
#                 through Feast) plus scripts (its per-batch Lua: dedup, state, CTR counters)
#   admin         operators only (redis-cli --user admin): everything
set -eu

dir="${1:?usage: render-acl.sh DIR (files gateway, materializer, events, admin) > users.acl}"
for user in gateway materializer events admin; do
    if [ ! -s "$dir/$user" ]; then
        echo "render-acl.sh: no password in $dir/$user" >&2
        exit 1
    fi
done

hash() {
    printf '%s' "$(cat "$dir/$1")" | sha256sum | cut -d' ' -f1
}

gateway=$(hash gateway)
materializer=$(hash materializer)
events=$(hash events)
admin=$(hash admin)

cat <<EOF
user default off resetkeys resetchannels -@all
user probe on nopass resetkeys resetchannels -@all +ping
user gateway on #${gateway} resetkeys resetchannels -@all +@connection +time +get +mget +hget +hmget +hgetall +exists +ttl +pttl +evalsha +eval +script|load +set +hset +hsetnx +pexpire +expire +hincrby +rpush +ltrim +lrange +multi +exec +discard %R~* ~cascade:ratelimit:* ~cascade:gateway:*
user materializer on #${materializer} resetkeys resetchannels +@all -@dangerous -@admin -@scripting -@pubsub ~*
user events on #${events} resetkeys resetchannels +@all -@dangerous -@admin -@pubsub ~*
user admin on #${admin} ~* &* +@all
EOF
