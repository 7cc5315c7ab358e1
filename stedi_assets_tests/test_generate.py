"""The generator feeds every pipeline test, so its quirks must be present and stable."""

from __future__ import annotations

import json
import pathlib
from collections import Counter, defaultdict
from typing import Any

import pytest

from stedi_assets.generate import generate_landing

SOURCES = ("customer", "accelerometer", "step_trainer")
CUSTOMER_KEYS = {
    "customerName",
    "email",
    "phone",
    "birthDay",
    "serialNumber",
    "registrationDate",
    "lastUpdateDate",
}
SHARE_KEYS = {"shareWithResearchAsOfDate", "shareWithPublicAsOfDate", "shareWithFriendsAsOfDate"}
ACCELEROMETER_KEYS = ["user", "timestamp", "x", "y", "z"]
STEP_TRAINER_KEYS = ["sensorReadingTime", "serialNumber", "distanceFromObject"]


def _files(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.json"))}


def _records(root: pathlib.Path, source: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted((root / source).glob(f"{source}-*.json"))
        for line in path.read_text().splitlines()
    ]


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("landing")
    return root, generate_landing(root, customers=400, seed=7)


def test_same_inputs_give_byte_identical_files(tmp_path: pathlib.Path) -> None:
    first = generate_landing(tmp_path / "a", customers=300, seed=3)
    second = generate_landing(tmp_path / "b", customers=300, seed=3)
    assert first == second
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    generate_landing(tmp_path / "c", customers=300, seed=4)
    assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_counts_match_lines_on_disk(landing: tuple[pathlib.Path, dict[str, int]]) -> None:
    root, counts = landing
    assert set(counts) == set(SOURCES)
    for source in SOURCES:
        paths = list((root / source).glob(f"{source}-*.json"))
        assert paths
        lines = sum(len(p.read_bytes().splitlines()) for p in paths)
        assert lines == counts[source] > 0
    assert len(list((root / "accelerometer").glob("*.json"))) >= 3
    assert len(list((root / "step_trainer").glob("*.json"))) >= 2


def test_lines_parse_with_expected_keys(landing: tuple[pathlib.Path, dict[str, int]]) -> None:
    root, _ = landing
    customers = _records(root, "customer")
    for customer in customers:
        assert CUSTOMER_KEYS <= customer.keys() <= CUSTOMER_KEYS | SHARE_KEYS
        first, last = customer["customerName"].split(" ")
        assert customer["email"] == f"{first}.{last}@test.com"
        assert customer["phone"] == "8015551212"
    for reading in _records(root, "accelerometer"):
        assert list(reading) == ACCELEROMETER_KEYS
        assert all(isinstance(reading[axis], float) for axis in "xyz")
    for reading in _records(root, "step_trainer"):
        assert list(reading) == STEP_TRAINER_KEYS
        assert isinstance(reading["distanceFromObject"], int)


def test_customer_line_formatting_matches_real_export(
    landing: tuple[pathlib.Path, dict[str, int]],
) -> None:
    root, _ = landing
    (path,) = (root / "customer").glob("*.json")
    line = path.read_text().splitlines()[0]
    assert line.startswith('{"customerName": "')
    assert json.dumps(json.loads(line)) == line


def test_missing_consent_comes_in_every_real_variant(
    landing: tuple[pathlib.Path, dict[str, int]],
) -> None:
    root, _ = landing
    customers = _records(root, "customer")
    research = [c.get("shareWithResearchAsOfDate", "absent") for c in customers]
    consenting = sum(isinstance(v, int) and v > 0 for v in research)
    assert 0.35 <= consenting / len(customers) <= 0.65
    assert research.count(0) >= 1
    assert research.count(None) >= 1
    assert research.count("absent") >= 1


def test_some_serial_numbers_are_reused(landing: tuple[pathlib.Path, dict[str, int]]) -> None:
    root, _ = landing
    serials = Counter(c["serialNumber"] for c in _records(root, "customer"))
    assert any(n > 1 for n in serials.values())


def test_timestamps_collide_across_customers(
    landing: tuple[pathlib.Path, dict[str, int]],
) -> None:
    root, _ = landing
    users_at: defaultdict[int, set[str]] = defaultdict(set)
    per_user_time: Counter[tuple[str, int]] = Counter()
    for reading in _records(root, "accelerometer"):
        users_at[reading["timestamp"]].add(reading["user"])
        per_user_time[(reading["user"], reading["timestamp"])] += 1
    assert sum(len(users) > 1 for users in users_at.values()) >= 5
    assert any(n == 2 for n in per_user_time.values())


def test_step_trainer_pairs_with_accelerometer_by_time(
    landing: tuple[pathlib.Path, dict[str, int]],
) -> None:
    root, _ = landing
    customers = _records(root, "customer")
    known_serials = {c["serialNumber"] for c in customers}
    accelerometer_times = {r["timestamp"] for r in _records(root, "accelerometer")}
    step_readings = _records(root, "step_trainer")
    assert {r["serialNumber"] for r in step_readings} <= known_serials
    assert {r["sensorReadingTime"] for r in step_readings} <= accelerometer_times
    users = {r["user"] for r in _records(root, "accelerometer")}
    assert 0.7 <= len(users) / len(customers) <= 0.95


def test_placeholder_birthdays_exist(landing: tuple[pathlib.Path, dict[str, int]]) -> None:
    root, _ = landing
    birthdays = {c["birthDay"] for c in _records(root, "customer")}
    assert birthdays & {"1399-01-01", "1900-01-01"}


def test_small_populations_still_show_the_quirks(tmp_path: pathlib.Path) -> None:
    generate_landing(tmp_path, customers=20, seed=1)
    serials = Counter(c["serialNumber"] for c in _records(tmp_path, "customer"))
    assert any(n > 1 for n in serials.values())
    users_at: defaultdict[int, set[str]] = defaultdict(set)
    for reading in _records(tmp_path, "accelerometer"):
        users_at[reading["timestamp"]].add(reading["user"])
    assert sum(len(users) > 1 for users in users_at.values()) >= 5


def test_empty_population_writes_empty_files(tmp_path: pathlib.Path) -> None:
    assert generate_landing(tmp_path, customers=0) == dict.fromkeys(SOURCES, 0)


def test_large_population_runs(tmp_path: pathlib.Path) -> None:
    counts = generate_landing(tmp_path, customers=5000, seed=42)
    assert counts["customer"] == 5000
    assert counts["accelerometer"] > counts["step_trainer"] > 0
