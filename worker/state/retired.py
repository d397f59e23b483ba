"""What is kept of a charge once its visit expired."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from rules.visit import Published


@dataclass(frozen=True, slots=True)
class Retired:
    """What is kept of a charge once its visit expired."""

    published: Published
    date_of_service: dt.date
    won_by: tuple[dt.datetime, str]  # (occurred_at, event_id) of the event it was decided on

    @property
    def last_seen(self) -> dt.date:
        """The later of its last event and its date of service: the memory counts from here
        (an occurred_at before the date of service is a fixable hold, not a reason to forget)."""
        return max(self.won_by[0].date(), self.date_of_service)
