"""Fleetport's test suite."""

import pytest

# The toolkit is imported by helper modules that conftest files import before pytest loads it
# as a plugin; registering it here, with the package, keeps its assertions rewritten.
pytest.register_assert_rewrite("tests.toolkit")
