"""Reading a `/metrics` page (the families it has, the value of one labelled series), and the
families every service exports."""

from __future__ import annotations

from typing import Final

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["SERVICE_FAMILIES", "Scrape"]

# What every service exports, whatever it does.
SERVICE_FAMILIES: Final = (
    "fleetport_http_request_duration_seconds",
    "fleetport_db_operations_per_request",
    "fleetport_outbox_backlog",
    "fleetport_outbox_oldest_age_seconds",
    "fleetport_outbox_deliveries",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
)


class Scrape:
    """One page in the Prometheus text format, parsed."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    @classmethod
    def of(cls, response: httpx.Response) -> Scrape:
        """The page a `/metrics` answer carries, once checked to be one (200, text format)."""
        assert response.status_code == 200, response.url
        assert response.headers["content-type"].startswith("text/plain; version=")
        return cls(response.text)

    def value(self, sample: str, **labels: str) -> float:
        """The value of the series `sample{labels}` (0 when the page does not have it).

        Only the given labels are compared, so the series must be the only one they pick.
        """
        found = [
            s.value
            for family in self.families.values()
            for s in family.samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(found) <= 1, f"{sample}{labels} names {len(found)} series"
        return found[0] if found else 0.0
