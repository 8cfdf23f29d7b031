"""useradm's use-cases and domain errors."""

from services.useradm.app.auth import AuthApp, TokenPolicy
from services.useradm.app.keys import KeyRing, load_key_ring
from services.useradm.app.passwords import PasswordHasher
from services.useradm.app.plans import PlansApp
from services.useradm.app.settings import SettingsApp
from services.useradm.app.users import UsersApp

__all__ = [
    "AuthApp",
    "KeyRing",
    "PasswordHasher",
    "PlansApp",
    "SettingsApp",
    "TokenPolicy",
    "UsersApp",
    "load_key_ring",
]
