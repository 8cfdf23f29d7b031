"""auditlogs service: the audit trail of who did what, listed, filtered and exported."""
