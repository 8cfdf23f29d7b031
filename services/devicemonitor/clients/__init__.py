"""What devicemonitor asks of its peers: effects delivered through the outbox."""

from services.devicemonitor.clients.effects import AUDITLOGS, INVENTORY, alert_audit, reindex

__all__ = ["AUDITLOGS", "INVENTORY", "alert_audit", "reindex"]
