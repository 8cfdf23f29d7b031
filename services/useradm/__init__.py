"""useradm: users, login and logout, user tokens and their verification, UI settings."""

__all__: list[str] = []
