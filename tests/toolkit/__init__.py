"""The tests' toolkit, shared by every tier and loaded as a pytest plugin by the root conftest.

Being a plugin, its modules get pytest's assertion rewriting and its fixtures (`clock`) are
available everywhere:

- `assert_error`: a refusal in Mender's shape, with its status, message and request id;
- `eventually` / `wait_until`: poll a condition (async / blocking) instead of sleeping;
- `ManualClock`: time that moves only when a test says so, for TTLs and expiries;
- `LiveServer`: an ASGI app on a real port inside the test's event loop;
- `child_pids` / `is_running`: real processes, seen through /proc.
"""

from tests.toolkit.clocks import ManualClock, clock
from tests.toolkit.errors import assert_error
from tests.toolkit.polling import eventually, wait_until
from tests.toolkit.processes import child_pids, is_running
from tests.toolkit.servers import LiveServer

__all__ = [
    "LiveServer",
    "ManualClock",
    "assert_error",
    "child_pids",
    "clock",
    "eventually",
    "is_running",
    "wait_until",
]
