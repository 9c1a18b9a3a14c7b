#!/bin/sh
# Start tritonserver on Cascade's model repository. Settings come from the environment, extra
# arguments are appended (they win over the defaults below):
#   TRITON_MODEL_REPOSITORY  /models      repository root (config.pbtxt + generated versions)
#   TRITON_MODEL_CONFIG_NAME (unset)      "gpu" selects configs/gpu.pbtxt (KIND_GPU); unset: CPU
#   TRITON_HTTP_PORT / TRITON_GRPC_PORT / TRITON_METRICS_PORT   8000 / 8001 / 8002
#   TRITON_POLL_SECS         30           repository poll: a new exported version loads live
#   OTEL_EXPORTER_OTLP_ENDPOINT (unset)   e.g. http://jaeger:4318: Triton's own OTel spans
#   TRITON_TRACE_RATE        1            trace one request in N (Triton joins the caller's
#                                         trace through the traceparent header)
set -eu

set -- \
    --model-repository="${TRITON_MODEL_REPOSITORY:-/models}" \
    --http-port="${TRITON_HTTP_PORT:-8000}" \
    --grpc-port="${TRITON_GRPC_PORT:-8001}" \
    --metrics-port="${TRITON_METRICS_PORT:-8002}" \
    --model-control-mode=poll \
    --repository-poll-secs="${TRITON_POLL_SECS:-30}" \
    --strict-readiness=true \
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

exec tritonserver "$@"
