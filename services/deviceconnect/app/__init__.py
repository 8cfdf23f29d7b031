"""deviceconnect's use-cases: connections, sessions, file transfers, recordings."""
