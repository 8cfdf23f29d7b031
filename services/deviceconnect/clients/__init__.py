"""What deviceconnect sends to or asks of others: audit effects, other instances (NATS)."""
