"""HTTP and websocket routes of deviceconnect, one module per API surface."""
