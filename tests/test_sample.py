"""worker.sample: reproducible, valid, realistically messy sample charge events."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.model import ChargeEvent
from worker.offline.sample import generate_events, stamp_near, write_jsonl

VISITS = 2000
SEED = 20260302

Events = list[dict[str, object]]

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@pytest.fixture(scope="module")
def events() -> Events:
    return generate_events(VISITS, SEED)


@pytest.fixture(scope="module")
def models(events: Events) -> list[ChargeEvent]:
    return [ChargeEvent.model_validate(e) for e in events]


def _jsonl(events: Events) -> bytes:
    buf = io.StringIO()
    write_jsonl(events, buf)
    return buf.getvalue().encode()


def _first_by_event_id(events: Events) -> list[dict[str, object]]:
    seen: set[object] = set()
    out = []
    for e in events:
        if e["event_id"] not in seen:
            seen.add(e["event_id"])
            out.append(e)
    return out


# --- reproducibility -------------------------------------------------------------------------


def test_same_seed_same_bytes(events: Events) -> None:
    assert _jsonl(generate_events(VISITS, SEED)) == _jsonl(events)


def test_different_seed_differs() -> None:
    assert _jsonl(generate_events(200, 1)) != _jsonl(generate_events(200, 2))


def test_global_random_state_is_untouched() -> None:
    import random

    random.seed(5)
    expected = random.random()
    random.seed(5)
    generate_events(50, 9)
    assert random.random() == expected


def test_zero_visits_and_negative() -> None:
    assert generate_events(0, 1) == []
    with pytest.raises(ValueError):
        generate_events(-1, 1)


# --- shape -----------------------------------------------------------------------------------


def test_every_event_validates(events: Events, models: list[ChargeEvent]) -> None:
    assert len(models) == len(events) > VISITS


def test_jsonl_round_trips(events: Events) -> None:
    lines = _jsonl(events).decode().splitlines()
    assert len(lines) == len(events)
    assert [json.loads(line) for line in lines] == events
    compact = json.dumps(events[0], separators=(",", ":"), ensure_ascii=False)
    assert lines[0] == compact


def test_formats(events: Events) -> None:
    for e in events:
        assert ISO_Z.match(str(e["occurred_at"])), e["occurred_at"]
        assert DATE.match(str(e["date_of_service"]))
        assert re.fullmatch(r"P\d{8}", str(e["patient_id"]))
        assert re.fullmatch(r"C\d+", str(e["charge_id"]))
        assert re.fullmatch(
            r"E[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
            str(e["event_id"]),
        )
        provider = e["rendering_provider"]
        assert isinstance(provider, dict)
        assert re.fullmatch(r"\d{10}", provider["npi"])
        assert e["place_of_service"] == "11"
        assert isinstance(e["documentation"], dict)


def test_npis_pass_the_luhn_check(events: Events) -> None:
    def luhn_ok(npi: str) -> bool:
        total = 0
        for i, ch in enumerate(reversed("80840" + npi)):
            d = int(ch)
            if i % 2 == 1:
                d = d * 2 - 9 if d > 4 else d * 2
            total += d
        return total % 10 == 0

    npis = {e["rendering_provider"]["npi"] for e in events}  # type: ignore[index]
    assert npis and all(luhn_ok(n) for n in npis)


def test_traction_record_only_on_traction_lines(models: list[ChargeEvent]) -> None:
    for m in models:
        if m.traction is None:
            assert m.cpt_code not in ("97012", "S9090")
        else:
            assert m.cpt_code in ("97012", "9701", "97O12", "S9090")


def test_specialty_consistent_with_lines(models: list[ChargeEvent]) -> None:
    cmt = {"98940", "98941", "98942"}
    by_visit: dict[tuple[str, dt.date], list[ChargeEvent]] = {}
    for m in models:
        by_visit.setdefault((m.patient_id, m.date_of_service), []).append(m)
    for lines in by_visit.values():
        assert len({(m.rendering_provider.npi, m.payer.payer_id) for m in lines}) == 1
        specialty = lines[0].rendering_provider.specialty
        has_cmt = any(m.cpt_code in cmt for m in lines)
        assert has_cmt == (specialty == "CHIROPRACTOR")


def test_occurred_at_within_clinic_hours(models: list[ChargeEvent]) -> None:
    # 2026-03-02 is standard time in North Carolina: 08:00-18:00 EST = 13:00-23:00 UTC
    start = dt.datetime(2026, 3, 2, 13, tzinfo=dt.UTC)
    end = dt.datetime(2026, 3, 2, 23, tzinfo=dt.UTC)
    assert all(start <= m.occurred_at < end for m in models)
    dos = Counter(m.date_of_service for m in models)
    assert dos[dt.date(2026, 3, 2)] > 0.9 * len(models)
    assert dos[dt.date(2026, 3, 1)] > 0  # entered late


def test_day_parameter_and_daylight_time() -> None:
    models = [
        ChargeEvent.model_validate(e) for e in generate_events(100, 3, day=dt.date(2026, 7, 1))
    ]
    # EDT: 08:00-18:00 local = 12:00-22:00 UTC
    assert all(12 <= m.occurred_at.hour < 22 for m in models)
    assert {m.date_of_service for m in models} <= {
        dt.date(2026, 6, 30),
        dt.date(2026, 7, 1),
        dt.date(2026, 7, 2),
    }


# --- the mix ---------------------------------------------------------------------------------


def test_upserts_and_voids(events: Events) -> None:
    kinds = Counter(e["event_type"] for e in _first_by_event_id(events))
    assert kinds["UPSERT"] > 0.9 * len(events)
    assert kinds["VOID"] > 0.01 * len(events)


def test_corrections_reuse_charge_id_with_later_time(models: list[ChargeEvent]) -> None:
    by_charge: dict[str, list[ChargeEvent]] = {}
    for m in {m.event_id: m for m in models}.values():
        by_charge.setdefault(m.charge_id, []).append(m)
    corrected = 0
    for versions in by_charge.values():
        versions.sort(key=lambda m: m.occurred_at)
        assert versions[0].event_type == "UPSERT"  # every charge starts with an UPSERT
        assert len({v.occurred_at for v in versions}) == len(versions)
        upserts = [v for v in versions if v.event_type == "UPSERT"]
        if len(upserts) > 1:
            corrected += 1
            assert upserts[0].model_dump() != upserts[1].model_dump()
        if versions[-1].event_type == "VOID":
            # a VOID repeats the charge as last sent
            void, last = versions[-1], upserts[-1]
            assert void.model_dump(exclude={"event_id", "event_type", "occurred_at"}) == (
                last.model_dump(exclude={"event_id", "event_type", "occurred_at"})
            )
        assert all(v.event_type == "UPSERT" for v in versions[:-1])
    assert 0.02 * len(by_charge) < corrected < 0.10 * len(by_charge)


def test_event_ids_unique_except_redeliveries(events: Events) -> None:
    first_at: dict[object, int] = {}
    redelivered = 0
    for i, e in enumerate(events):
        eid = e["event_id"]
        if eid in first_at:
            redelivered += 1
            original = events[first_at[eid]]
            assert e == original  # an exact copy, delivered again later
            assert e is not original
        else:
            first_at[eid] = i
    assert 0.003 * len(events) < redelivered < 0.03 * len(events)
    assert max(Counter(e["event_id"] for e in events).values()) <= 3


def test_out_of_order_arrival(events: Events) -> None:
    times = [str(e["occurred_at"]) for e in events]
    inversions = sum(a > b for a, b in itertools.pairwise(times))
    assert 0.02 * len(events) < inversions < 0.25 * len(events)
    # but mostly ordered: no event arrives much more than 30 minutes late
    high = ""
    for t in times:
        high = max(high, t)
        late = dt.datetime.fromisoformat(high) - dt.datetime.fromisoformat(t)
        assert late < dt.timedelta(minutes=35)


def test_payers_and_plan_types(models: list[ChargeEvent]) -> None:
    payers = Counter(m.payer.payer_id for m in models)
    assert set(payers) == {
        "MEDICARE",
        "HUMANA-MA",
        "UHC",
        "BCBSNC",
        "NCSHP",
        "AETNA",
        "NC-MEDICAID",
        "WC-ACME",
        "AUTO-GEICO",
        "SELF",
    }
    assert len({m.payer.plan_type for m in models}) == 7
    assert {m.rendering_provider.specialty for m in models} == {
        "CHIROPRACTOR",
        "PHYSICAL_THERAPIST",
        "PHYSICIAN",
    }


def test_mostly_clean_traction_lines(models: list[ChargeEvent]) -> None:
    traction = [m for m in models if m.cpt_code == "97012" and m.event_type == "UPSERT"]
    assert len(traction) > 0.7 * VISITS
    clean = [
        m
        for m in traction
        if m.units == 1
        and m.traction is not None
        and m.traction.method == "MECHANICAL_DEVICE"
        and m.traction.body_regions
        and all(m.documentation.model_dump(exclude={"plan_of_care"}).values())
        and len(m.modifiers) <= 4
    ]
    assert len(clean) > 0.85 * len(traction)


def test_gp_and_gy_on_clean_lines(models: list[ChargeEvent]) -> None:
    gp_payers = {"MEDICARE", "HUMANA-MA", "UHC", "BCBSNC", "NCSHP"}
    traction = [m for m in models if m.cpt_code == "97012"]
    with_gp = sum("GP" in m.modifiers for m in traction if m.payer.payer_id in gp_payers)
    assert with_gp > 0.9 * sum(m.payer.payer_id in gp_payers for m in traction)
    medicare_chiro = [
        m
        for m in traction
        if m.payer.plan_type == "MEDICARE" and m.rendering_provider.specialty == "CHIROPRACTOR"
    ]
    assert medicare_chiro
    assert sum("GY" in m.modifiers for m in medicare_chiro) > 0.8 * len(medicare_chiro)


def test_problem_scenarios_present(models: list[ChargeEvent]) -> None:
    traction = [m for m in models if m.traction is not None]
    methods = Counter(str(m.traction.method) for m in traction if m.traction is not None)
    assert methods["MECHANICAL_DEVICE"] > 0.9 * len(traction)
    assert {"ROLLER_TABLE", "FLEXION_DISTRACTION", "DECOMPRESSION_DEVICE"} <= set(methods)
    assert any(m.cpt_code == "97012" and m.units > 1 for m in models)
    assert any(m.units == 0 for m in models)
    assert any(len(m.modifiers) > 4 for m in models)
    assert any("59" in m.modifiers and "XS" in m.modifiers for m in models)
    assert any(
        m.performed_by == "ASSISTANT" and not m.supervising_provider_in_suite for m in models
    )
    assert any(
        m.diagnosis_codes == ("M54.5",) or m.diagnosis_codes[:1] == ("S13.4XXA",) for m in models
    )
    per_visit = Counter(
        (m.patient_id, m.date_of_service)
        for m in models
        if m.cpt_code == "97012" and m.event_type == "UPSERT"
    )
    assert len({m.charge_id for m in models if m.cpt_code == "97012"}) > len(per_visit)
    assert any(m.traction is not None and m.traction.device in ("DRX9000", "VAX-D") for m in models)


# --- property: any seed ----------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**63), visits=st.integers(min_value=1, max_value=40)
)
def test_any_seed_gives_valid_events(seed: int, visits: int) -> None:
    events = generate_events(visits, seed)
    models = [ChargeEvent.model_validate(e) for e in events]
    assert len({(m.patient_id, m.date_of_service) for m in models}) == visits
    assert events == generate_events(visits, seed)


def test_stamp_near_keeps_the_days_order_just_before_now() -> None:
    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    day = generate_events(60, 4, day=now.date())
    stamped = stamp_near(day, now)
    assert [{**e, "occurred_at": None} for e in stamped] == [
        {**e, "occurred_at": None} for e in day
    ]  # only occurred_at changes
    when = {str(e["event_id"]): dt.datetime.fromisoformat(str(e["occurred_at"])) for e in stamped}
    distinct = len(when)
    assert max(when.values()) < now
    assert min(when.values()) >= now - dt.timedelta(milliseconds=distinct)
    original = {str(e["event_id"]): str(e["occurred_at"]) for e in day}
    by_new = sorted(when, key=when.__getitem__)
    assert [original[i] for i in by_new] == sorted(original[i] for i in by_new)
    for copy in stamped:  # a redelivered copy keeps its original's stamp
        assert dt.datetime.fromisoformat(str(copy["occurred_at"])) == when[str(copy["event_id"])]
    assert stamp_near(day, now) == stamped  # given `now`, still reproducible


def test_generate_now_stamps_today_just_before_now() -> None:
    from tests.cli_process import cli

    before = dt.datetime.now(dt.UTC)
    ran = cli("generate", "--visits", "40", "--seed", "2", "--now")
    after = dt.datetime.now(dt.UTC)
    assert ran.code == 0, ran.stderr
    models = [ChargeEvent.model_validate_json(line) for line in ran.stdout.splitlines()]
    assert len(models) > 40
    assert all(before - dt.timedelta(seconds=5) < m.occurred_at < after for m in models)
    dates = Counter(m.date_of_service for m in models)
    assert dates.most_common(1)[0][0] == before.date()
    assert max(dates) <= before.date() + dt.timedelta(days=1)
    # without --now the same seed is the fixed, reproducible day
    plain = cli("generate", "--visits", "40", "--seed", "2").stdout
    assert plain == cli("generate", "--visits", "40", "--seed", "2").stdout != ran.stdout
