#!/bin/sh
# Start tritonserver on Cascade's model repository. Settings come from the environment, extra
# arguments are appended (they win over the defaults below):
#   TRITON_ADMIN_KEY         (required)   the value of the triton-admin-key header that the
#                                         model-repository, model-config, logging, trace and
#                                         shared-memory APIs need (HTTP and gRPC), as in local
#                                         mode (two_tower/triton_server.py); from a Secret
#   TRITON_MODEL_REPOSITORY  /models      repository root (config.pbtxt + generated versions)
#   TRITON_MODEL_CONFIG_NAME (unset)      "gpu" selects configs/gpu.pbtxt (KIND_GPU); unset: CPU
#   TRITON_HTTP_PORT / TRITON_GRPC_PORT / TRITON_METRICS_PORT   8000 / 8001 / 8002
#   TRITON_POLL_SECS         30           how often the loader looks for a new exported version
#                                         (0: never; a new version then needs a restart)
#   OTEL_EXPORTER_OTLP_ENDPOINT (unset)   e.g. http://jaeger:4318: Triton's own OTel spans
#   TRITON_TRACE_RATE        1            trace one request in N (Triton joins the caller's
#                                         trace through the traceparent header)
#   CASCADE_TOOLS_DIR        /opt/cascade where model_manifest.py is (tests point it elsewhere)
#
# Model control is explicit: nothing in the repository loads unless asked. The models are
# two_tower (recommendations) and two_tower_similar (similar items, the same versions' item
# embeddings; two_tower/similar_export.py). At start every version folder of each must match its
# sha256 manifest (two_tower/manifest.py) or the container exits; then Triton loads each model
# that has a version (with none yet it starts without it). A loader per model next to the server
# (`model_manifest.py watch`) checks its folders every TRITON_POLL_SECS and, when they changed
# and verify, asks Triton over loopback, with the admin header, to load them.
set -eu

: "${TRITON_ADMIN_KEY:?TRITON_ADMIN_KEY must be set: the admin header value for Triton restricted APIs}"
repository="${TRITON_MODEL_REPOSITORY:-/models}"
http_port="${TRITON_HTTP_PORT:-8000}"
tools="${CASCADE_TOOLS_DIR:-/opt/cascade}"
restricted="model-repository,model-config,logging,trace,shared-memory:triton-admin-key=${TRITON_ADMIN_KEY}"

set -- \
    --model-repository="${repository}" \
    --http-port="${TRITON_HTTP_PORT:-8000}" \
    --grpc-port="${TRITON_GRPC_PORT:-8001}" \
    --metrics-port="${TRITON_METRICS_PORT:-8002}" \
    --model-control-mode=explicit \
    --exit-on-error=true \
    --strict-readiness=true \
    --http-restricted-api="${restricted}" \
    --grpc-restricted-protocol="${restricted}" \
    "$@"

if [ -n "${TRITON_MODEL_CONFIG_NAME:-}" ]; then
    set -- --model-config-name="${TRITON_MODEL_CONFIG_NAME}" "$@"
fi

if [ -n "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]; then
    # Triton wants host:port/path without the scheme.
    collector="${OTEL_EXPORTER_OTLP_ENDPOINT#http://}"
    collector="${collector#https://}"
    collector="${collector%/}"
    set -- \
        --trace-config mode=opentelemetry \
        --trace-config rate="${TRITON_TRACE_RATE:-1}" \
        --trace-config level=TIMESTAMPS \
        --trace-config "opentelemetry,url=${collector}/v1/traces" \
        --trace-config "opentelemetry,resource=service.name=${OTEL_SERVICE_NAME:-triton}" \
        "$@"
fi

models="two_tower two_tower_similar"
for model in ${models}; do
    if ls -d "${repository}/${model}"/[0-9]* >/dev/null 2>&1; then
        # Refuse to start on a version folder that does not match its manifest.
        python3 "${tools}/model_manifest.py" verify "${repository}/${model}"
        set -- --load-model="${model}" "$@"
    else
        # First deployment, before the first export: start without it (two_tower: not ready);
        # the loader loads the first version that verifies.
        echo "triton-entrypoint: no ${model} version yet; the loader loads the first verified one" >&2
    fi
done

if [ "${TRITON_POLL_SECS:-30}" != "0" ]; then
    # Outlive this shell: after the exec below they are tritonserver's children, stopped with
    # the container. They reach Triton over loopback; the admin key stays in the environment.
    for model in ${models}; do
        python3 "${tools}/model_manifest.py" watch "${repository}/${model}" --model "${model}" \
            --url "http://127.0.0.1:${http_port}" --interval "${TRITON_POLL_SECS:-30}" &
    done
fi

exec tritonserver "$@"
