"""The tests' toolkit, shared by every tier and loaded as a pytest plugin by the root conftest.

Being a plugin, its modules get pytest's assertion rewriting and its fixtures (`clock`) are
available everywhere:

- `assert_error`: a refusal in Mender's shape, with its status, message and request id;
- `eventually` / `wait_until`: poll a condition (async / blocking) instead of sleeping;
- `failing_commands`: the database refuses chosen commands, cutting a change mid-way;
- `ManualClock`: time that moves only when a test says so, for TTLs and expiries;
- `LiveServer`: an ASGI app on a real port inside the test's event loop;
- `child_pids` / `is_running`: real processes, seen through /proc;
- `Stubborn`: a task that swallows its first cancellation;
- `Scrape`: a `/metrics` page, parsed: its families and the value of a labelled series;
- `SimulatedDevice` / `Retrying`: a device driving the device API as the Mender client does
  (signed auth request, inventory, polls, status reports), retrying as the client retries.
"""

from tests.toolkit.clocks import ManualClock, clock
from tests.toolkit.database import failing_commands
from tests.toolkit.devices import Retrying, SimulatedDevice
from tests.toolkit.errors import assert_error
from tests.toolkit.metrics import Scrape
from tests.toolkit.polling import eventually, wait_until
from tests.toolkit.processes import child_pids, is_running
from tests.toolkit.servers import LiveServer
from tests.toolkit.tasks import Stubborn

__all__ = [
    "LiveServer",
    "ManualClock",
    "Retrying",
    "Scrape",
    "SimulatedDevice",
    "Stubborn",
    "assert_error",
    "child_pids",
    "clock",
    "eventually",
    "failing_commands",
    "is_running",
    "wait_until",
]
