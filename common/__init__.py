"""Shared library for every Fleetport service and the gateway.

- `app`: `create_service_app` (error shape, request ids, body limit, health, lifespan)
- `settings`: `BaseServiceSettings` (pydantic-settings; subclasses set the env prefix)
- `errors`: domain errors carrying their HTTP status
- `identity`: caller identity decoded from the bearer token (`DeviceIdentity`, `UserIdentity`)
- `paging`: `PageDep`, `parse_page`, `set_page_headers`
- `mongo`: client creation, `TenantCollection`, `transaction`, `ensure_indexes`
- `outbox`: `Effect`, `Outbox`, `OutboxRelay` for cross-service effects
- `peers`: `PeerClient`, base of typed internal httpx clients
- `tokens`: JWT signing/verification (RS256, EdDSA) and key files
- `routing`: `TENANT` path segment that accepts an empty tenant id
- `embedded`: the embedded Mongo-wire server process
- `wsserver`: uvicorn's websocket protocol, logging a refused handshake as one access line
- `multipart`: `MultipartStream`, incremental multipart/form-data reading for streamed uploads
"""
