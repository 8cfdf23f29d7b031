"""What auditlogs asks its peers: the email of a user who acted."""

from services.auditlogs.clients.useradm import HttpUseradmClient, UsersClient

__all__ = ["HttpUseradmClient", "UsersClient"]
