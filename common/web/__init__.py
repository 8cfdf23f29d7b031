"""What a FastAPI service is built from; the only part of `common` that imports FastAPI.

Only a service's HTTP layer (`api/`, `main.py`) and its `__main__` import these modules.

- `app`: `create_service_app` (error shape, request ids, body limit, health, lifespan),
  `services_dependency`/`services_of` (the service's typed `Services`), `serve`
- `lean`: `LeanRoutes`, hot requests answered before FastAPI's routing when they can be
- `paging`: `PageDep`, `set_page_headers` (`Link`, `X-Total-Count`)
- `identity`: the caller's identity as route dependencies (`DeviceIdentity`, `UserIdentity`)
- `routing`: `TENANT` path segment that accepts an empty tenant id
- `multipart`: `MultipartStream`, incremental multipart/form-data reading for streamed uploads
- `wsserver`: uvicorn's websocket protocol, logging a refused handshake as one access line
  (the gateway serves its websockets with it too)
"""
