"""auditlogs' use-cases: recording events, listing and exporting them."""

from services.auditlogs.app.logs import AuditLogsApp
from services.auditlogs.app.query import parse_filter, parse_limit

__all__ = ["AuditLogsApp", "parse_filter", "parse_limit"]
