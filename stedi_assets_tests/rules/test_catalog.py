"""The declarations (stedi_assets.rules.catalog): generated tables, privacy flags and the registry."""

from __future__ import annotations

import pytest

from stedi_assets.rules.catalog import (
    EVENT_DAY,
    INGESTED_AT,
    LANDING,
    LINE_NUMBER,
    PROVENANCE,
    QUARANTINE,
    SOURCE_FILE,
    SOURCES,
    TABLES,
    Source,
)

PROVENANCE_NAMES = (SOURCE_FILE, LINE_NUMBER, INGESTED_AT)


def names(columns) -> list[str]:
    return [c.name for c in columns]


def test_provenance_columns_in_order() -> None:
    assert names(PROVENANCE) == list(PROVENANCE_NAMES)


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_landing_table_is_the_source_columns_then_provenance(source: Source) -> None:
    table = source.landing
    assert (table.name, table.zone) == (f"{source.name}_landing", LANDING)
    # a reading source's landing table is partitioned by the UTC day of its event time
    partition = [EVENT_DAY] if source.event_time else []
    assert names(table.columns) == [*names(source.columns), *PROVENANCE_NAMES, *partition]
    assert table.partition_by == tuple(partition)
    assert TABLES[table.name] == table


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_rejects_table_columns(source: Source) -> None:
    table = source.rejects
    assert (table.name, table.zone) == (f"{source.name}_rejects", QUARANTINE)
    assert names(table.columns) == [SOURCE_FILE, LINE_NUMBER, "reason", "raw_line", INGESTED_AT]
    assert TABLES[table.name] == table


def test_sources_in_order() -> None:
    assert [s.name for s in SOURCES] == ["customer", "accelerometer", "step_trainer"]


def test_sensor_only_exactly_for_sensor_tables() -> None:
    sensor_only = {name for name, table in TABLES.items() if table.sensor_only}
    assert sensor_only == {"accelerometer_trusted", "step_trainer_trusted", "machine_learning_curated"}


@pytest.mark.parametrize("name", sorted(n for n, t in TABLES.items() if t.subset_of))
def test_subset_of_names_a_declared_table_with_the_same_columns(name: str) -> None:
    table = TABLES[name]
    assert table.subset_of in TABLES, table.subset_of
    parent = TABLES[table.subset_of]
    assert [c for c in table.columns if c.name not in PROVENANCE_NAMES] == [
        c for c in parent.columns if c.name not in PROVENANCE_NAMES
    ]


def test_subset_of_is_declared_where_a_table_filters_another() -> None:
    subsets = {name: table.subset_of for name, table in TABLES.items() if table.subset_of}
    assert subsets == {
        "customer_trusted": "customer_landing",
        "accelerometer_trusted": "accelerometer_landing",
        "step_trainer_trusted": "step_trainer_landing",
        "customer_curated": "customer_trusted",
    }


def test_tables_holds_exactly_the_declared_names() -> None:
    assert sorted(TABLES) == sorted(
        [
            "customer_landing",
            "accelerometer_landing",
            "step_trainer_landing",
            "customer_rejects",
            "accelerometer_rejects",
            "step_trainer_rejects",
            "customer_trusted",
            "accelerometer_trusted",
            "step_trainer_trusted",
            "customer_curated",
            "machine_learning_curated",
            "erasure_log",
        ]
    )
    assert all(table.name == name for name, table in TABLES.items())
