from pathlib import Path

import dagster as dg

from stedi_assets.definitions import defs
from stedi_assets.defs.partitions import EVENT_DAYS
from stedi_assets.rules.catalog import SOURCES

ASSETS = {
    "customer_landing": "landing",
    "accelerometer_landing": "landing",
    "step_trainer_landing": "landing",
    "customer_rejects": "quarantine",
    "accelerometer_rejects": "quarantine",
    "step_trainer_rejects": "quarantine",
    "customer_trusted": "trusted",
    "accelerometer_trusted": "trusted",
    "step_trainer_trusted": "trusted",
    "customer_curated": "curated",
    "machine_learning_curated": "curated",
    "erasure_log": "privacy",
}
REPORTS = {"curated_report": "report"}
"""Assets that draw the tables rather than store one."""

CHECKS = {
    ("erasure_log", "schema_as_declared"),
    ("customer_landing", "schema_as_declared"),
    ("customer_landing", "row_count"),
    ("customer_landing", "lines_conserved"),
    ("customer_landing", "reject_rate"),
    ("accelerometer_landing", "schema_as_declared"),
    ("accelerometer_landing", "row_count"),
    ("accelerometer_landing", "lines_conserved"),
    ("accelerometer_landing", "reject_rate"),
    ("step_trainer_landing", "schema_as_declared"),
    ("step_trainer_landing", "row_count"),
    ("step_trainer_landing", "lines_conserved"),
    ("step_trainer_landing", "reject_rate"),
    ("customer_rejects", "schema_as_declared"),
    ("accelerometer_rejects", "schema_as_declared"),
    ("step_trainer_rejects", "schema_as_declared"),
    ("customer_trusted", "consent_given"),
    ("customer_trusted", "customers_on_hold"),
    ("customer_trusted", "schema_as_declared"),
    ("customer_trusted", "row_count"),
    ("customer_trusted", "no_duplicate_rows"),
    ("customer_trusted", "unique_by_email"),
    ("accelerometer_trusted", "users_are_trusted_customers"),
    ("accelerometer_trusted", "schema_as_declared"),
    ("accelerometer_trusted", "row_count"),
    ("accelerometer_trusted", "no_duplicate_rows"),
    ("accelerometer_trusted", "no_profile_columns"),
    ("step_trainer_trusted", "serials_belong_to_curated_customers"),
    ("step_trainer_trusted", "shared_serials_excluded"),
    ("step_trainer_trusted", "schema_as_declared"),
    ("step_trainer_trusted", "row_count"),
    ("step_trainer_trusted", "no_duplicate_rows"),
    ("step_trainer_trusted", "no_profile_columns"),
    ("customer_curated", "customers_have_accelerometer_data"),
    ("customer_curated", "schema_as_declared"),
    ("customer_curated", "row_count"),
    ("customer_curated", "no_duplicate_rows"),
    ("customer_curated", "unique_by_email"),
    ("machine_learning_curated", "rows_have_both_sides"),
    ("machine_learning_curated", "users_are_curated_customers"),
    ("machine_learning_curated", "cross_customer_pairs"),
    ("machine_learning_curated", "schema_as_declared"),
    ("machine_learning_curated", "row_count"),
    ("machine_learning_curated", "no_duplicate_rows"),
    ("machine_learning_curated", "no_profile_columns"),
}

BLOCKING = {
    ("customer_trusted", "consent_given"),
    ("accelerometer_trusted", "users_are_trusted_customers"),
    ("step_trainer_trusted", "serials_belong_to_curated_customers"),
    ("customer_curated", "customers_have_accelerometer_data"),
    ("machine_learning_curated", "rows_have_both_sides"),
    ("machine_learning_curated", "users_are_curated_customers"),
    ("customer_landing", "lines_conserved"),
    ("accelerometer_landing", "lines_conserved"),
    ("step_trainer_landing", "lines_conserved"),
    ("accelerometer_trusted", "no_profile_columns"),
    ("step_trainer_trusted", "no_profile_columns"),
    ("machine_learning_curated", "no_profile_columns"),
}


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def _graph():
    return defs.resolve_asset_graph()


def test_asset_keys_groups_and_kinds():
    graph = _graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == set(ASSETS) | set(REPORTS) | {"glue_catalog"}
    for name, group in ASSETS.items():
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == group
        assert {"polars", "delta"} <= set(node.kinds)
        assert node.description


def test_the_glue_catalog_is_optional_and_runs_after_every_table():
    node = _graph().get(dg.AssetKey("glue_catalog"))
    assert (node.group_name, set(node.kinds)) == ("catalog", {"glue", "athena"})
    assert node.description
    assert {p.to_user_string() for p in node.parent_keys} == set(ASSETS)
    selected = {
        job: {key.to_user_string() for key in defs.resolve_job_def(job).asset_layer.selected_asset_keys}
        for job in ("stedi_lakehouse_job", "stedi_glue_catalog_job")
    }
    assert selected == {
        "stedi_lakehouse_job": set(ASSETS) | set(REPORTS),
        "stedi_glue_catalog_job": {"glue_catalog"},
    }


def test_the_report_runs_in_the_zones_run_after_the_tables_it_draws():
    node = _graph().get(dg.AssetKey("curated_report"))
    assert (node.group_name, set(node.kinds)) == ("report", {"polars", "svg", "html"})
    assert node.description and node.partitions_def is None
    drawn = {name for name, group in ASSETS.items() if group in ("landing", "trusted", "curated")}
    assert {p.to_user_string() for p in node.parent_keys} == drawn
    zones = defs.resolve_job_def("stedi_zones_job").asset_layer.selected_asset_keys
    assert dg.AssetKey("curated_report") in zones


def test_lineage_between_zones():
    graph = _graph()
    parents = {
        key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }
    assert parents["customer_trusted"] == {"customer_landing", "customer_rejects"}
    assert parents["accelerometer_trusted"] == {"accelerometer_landing", "customer_trusted"}
    assert parents["customer_curated"] == {"customer_trusted", "accelerometer_trusted"}
    assert parents["step_trainer_trusted"] == {
        "step_trainer_landing",
        "customer_curated",
        "customer_landing",
        "customer_rejects",
    }
    assert parents["machine_learning_curated"] == {
        "step_trainer_trusted",
        "accelerometer_trusted",
        "customer_curated",
    }


def test_checks_and_their_blocking():
    graph = _graph()
    specs = {
        (key.asset_key.to_user_string(), key.name): graph.get_check_spec(key)
        for key in graph.asset_check_keys
    }
    assert set(specs) == CHECKS
    assert {name for name, spec in specs.items() if spec.blocking} == BLOCKING
    assert all(spec.description for spec in specs.values())


def test_jobs_schedule_and_sensor():
    assert [job.name for job in defs.jobs] == [
        "stedi_lakehouse_job",
        "stedi_ingest_job",
        "stedi_zones_job",
        "stedi_glue_catalog_job",
    ]
    schedule = defs.resolve_schedule_def("stedi_daily_refresh")
    assert (schedule.cron_schedule, schedule.job_name) == ("0 3 * * *", "stedi_lakehouse_job")
    assert [s.name for s in defs.schedules] == ["stedi_daily_refresh"]
    assert [s.name for s in defs.sensors] == [
        "stedi_new_landing_files",
        "stedi_zones_automation",
        "stedi_run_failures",
    ]


def test_declarative_automation_covers_the_zones_but_not_the_consent_decision():
    """New readings flow downstream by automation; consent is decided only in a run of every zone."""
    graph = _graph()
    automated = {
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if graph.get(key).automation_condition is not None
    }
    assert automated == {
        "accelerometer_trusted",
        "step_trainer_trusted",
        "customer_curated",
        "machine_learning_curated",
        "curated_report",
    }
    sensor = defs.resolve_sensor_def("stedi_zones_automation")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    targeted = sensor.asset_selection.resolve(graph)
    assert automated <= {key.to_user_string() for key in targeted}
    assert dg.AssetKey("customer_trusted") in targeted  # targeted, but it has no condition


def test_the_reading_tables_are_partitioned_by_day_and_backfilled_in_one_run():
    assets = {name: defs.resolve_assets_def(dg.AssetKey(name)) for name in ASSETS}
    partitioned = {name for name, definition in assets.items() if definition.partitions_def}
    assert partitioned == {"accelerometer_trusted", "step_trainer_trusted", "machine_learning_curated"}
    for name in partitioned:
        assert assets[name].partitions_def == EVENT_DAYS
        assert assets[name].backfill_policy == dg.BackfillPolicy.single_run()
    assert EVENT_DAYS.get_first_partition_key() == "2022-01-01"


def test_runs_from_the_ui_and_the_schedule_start_no_process_per_step():
    """The job, and the ad-hoc job behind the UI's "Materialize all", run every step in process."""
    assert defs.resolve_job_def("stedi_lakehouse_job").executor_def.name == "in_process"
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"


def test_each_table_writes_from_a_pool_of_its_own():
    pools = {name: defs.resolve_assets_def(dg.AssetKey(name)).op.pool for name in ASSETS}
    assert pools["customer_trusted"] == "delta_customer_trusted"
    assert pools["machine_learning_curated"] == "delta_machine_learning_curated"
    assert pools["customer_landing"] == pools["customer_rejects"] == "delta_customer_ingest"
    assert len(set(pools.values())) == len(ASSETS) - 3


def test_every_step_the_launchpad_shows_is_named_as_the_readme_says():
    """The README names each step: an asset's own name, ingest_<source>, <source>_landing_checks,
    <table>_checks, or <table>_table_contracts."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    documented = {
        *ASSETS,
        *REPORTS,
        "glue_catalog",
        *(f"ingest_{source.name}" for source in SOURCES),
        *(f"{source.name}_landing_checks" for source in SOURCES),
        *(f"{table}_checks" for table in ASSETS),
        *(f"{table}_table_contracts" for table in ASSETS),
    }
    for job in defs.jobs:
        steps = {node.name for node in defs.resolve_job_def(job.name).graph.node_defs}
        assert steps <= documented, (job.name, steps - documented)
    for pattern in ("`<source>_landing_checks`", "`<table>_checks`", "`<table>_table_contracts`"):
        assert pattern in readme
    assert "`ingest_<source>`" in readme
