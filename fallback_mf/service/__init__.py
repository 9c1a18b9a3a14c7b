"""The deployable MF service (FastAPI): ``python -m fallback_mf`` runs ``main.create_app``.

==================== ============================================================
module               role
==================== ============================================================
``main``             ``create_app``: lifespan, state, routes, middleware
``api``              HTTP routes (recommendations, probes, metrics, admin reload)
``model``            the loaded model, its atomic swap and hot reload
``scoring``          ``AlsScorer``: one user's top k from the artifact's arrays (numpy)
``metrics``          Prometheus metrics (``mf_*``)
``middleware``       one ASGI middleware: metrics and tracing per request
``deps``             FastAPI dependency aliases over ``app.state``
``settings``         ``MfSettings`` (env prefix ``MF_``)
``errors``           domain errors and their HTTP status
==================== ============================================================

From ``fallback_mf`` it imports only ``artifact_format`` (reading and checking an artifact) and
``schemas`` (the wire format): no pandas, torch or training code in the service process.
"""
