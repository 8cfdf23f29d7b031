"""Shared library for every Fleetport service and the gateway.

Web modules (FastAPI/Starlette): `app`, `identity`, `paging`, `routing`; the others are free
of any web framework, so use-cases may import them (the import contracts check it).

- `app`: `create_service_app` (error shape, request ids, body limit, health, lifespan),
  `services_dependency`/`services_of` (the service's typed `Services`), `serve`
- `settings`: `BaseServiceSettings` (pydantic-settings; subclasses set the env prefix)
- `errors`: domain errors carrying their HTTP status
- `claims`: `Identity`, `decode_claims`: who a bearer token names (no verification)
- `identity`: the caller's identity as route dependencies (`DeviceIdentity`, `UserIdentity`)
- `pages`: `Page`, `parse_page`, the default and largest page sizes
- `paging`: `PageDep`, `set_page_headers` (`Link`, `X-Total-Count`)
- `requestid`: the id of the request being handled (a contextvar)
- `mongo`: client creation, `TenantCollection`, `transaction`, `ensure_indexes`
- `outbox`: `Effect`, `Outbox`, `OutboxRelay` for cross-service effects
- `peers`: `PeerClient`, base of typed internal httpx clients
- `tokens`: JWT signing/verification (RS256, EdDSA) and key files
- `routing`: `TENANT` path segment that accepts an empty tenant id
- `embedded`: the embedded Mongo-wire server process
"""
