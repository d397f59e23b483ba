"""PollBudget: a poll asks for what the open batch can still decide before it is due."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from worker.runtime.poll_budget import SMOOTHING, PollBudget


@dataclass
class Batch:
    left: float

    def seconds_left(self) -> float:
        return self.left


def test_unmeasured_or_no_open_batch_asks_for_the_most() -> None:
    budget = PollBudget(1000)
    assert budget.records(Batch(0.05)) == 1000  # no cost measured yet
    budget.observe(100, 0.01)
    assert budget.records(None) == 1000  # the next records open a batch of their own


def test_asks_for_what_the_time_left_decides_at_the_measured_cost() -> None:
    budget = PollBudget(1000)
    budget.observe(100, 0.01)  # 100 µs per record
    assert budget.records(Batch(0.05)) == 500
    assert budget.records(Batch(0.5)) == 1000  # never past max_poll_records
    # Due or late: one record still, so a batch always grows.
    assert budget.records(Batch(0.0)) == 1 == budget.records(Batch(-0.02))


def test_the_cost_follows_recent_polls_and_ignores_empty_ones() -> None:
    budget = PollBudget(1000)
    budget.observe(100, 0.01)
    budget.observe(0, 5.0)  # nothing decided: no cost to learn
    assert budget.seconds_per_record == pytest.approx(1e-4)
    budget.observe(100, 0.03)  # 300 µs per record now
    assert budget.seconds_per_record == pytest.approx(1e-4 + SMOOTHING * 2e-4)
