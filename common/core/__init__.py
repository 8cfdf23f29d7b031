"""The framework-free shared library: nothing here imports FastAPI, Starlette or uvicorn.

Use-cases, stores, peer clients and the gateway import these modules; so may `common.web`.

- `errors`: domain errors carrying their HTTP status
- `settings`: `BaseServiceSettings` (pydantic-settings; subclasses set the env prefix)
- `servicespec`: `ServiceSpec`, how a service declares itself (`services/<name>/service.py`)
- `mongo`: client creation, `TenantCollection`, `transaction`, `atomically` (retried on
  conflicts, 503 when they persist), `ensure_indexes`
- `outbox`: `Effect`, `Outbox`, `OutboxRelay` for cross-service effects
- `audit`: `audit_event`, `Actor`, `AuditObject`: audit events queued in the outbox
- `peers`: `PeerClient`, base of typed internal httpx clients
- `tokens`: JWT signing/verification (RS256, EdDSA) and key files
- `claims`: `Identity`, `decode_claims`: who a bearer token names (no verification)
- `pages`: `Page`, `parse_page`, the default and largest page sizes
- `requestid`: the id of the request being handled (a contextvar)
- `metrics`: the Prometheus families every process exports, `RequestMetrics` (the ASGI
  middleware timing requests and counting their database commands)
- `logging`: JSON log lines tagged with the service and request id
- `healthcheck`: `python -m common.core.healthcheck URL`, the containers' health check
  (standard library only: it runs in every production container, so it is no local-stack
  tool, and it must start without loading a web framework)
"""
