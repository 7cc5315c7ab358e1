"""Declarative automation of the trusted and curated zones: new readings flow downstream on their own.

The landing sensor (defs/automation.py) ingests new reading files; these conditions then carry them
through the zones, each table when its inputs changed and only over the days that changed:

- a reading table (`accelerometer_trusted`, `step_trainer_trusted`, `machine_learning_curated`)
  requests the days it would recompute now (`DaysToRecompute`, read from the Delta logs: the days
  whose input partitions changed since its last build, or that a run left pending), when an input
  was updated or when such days appear;
- `customer_curated` (who has accelerometer data) follows `accelerometer_trusted`, and the tables
  decided from it (`step_trainer_trusted`, `machine_learning_curated`) follow it over their newest
  partition: a changed population rebuilds them whole whatever day a run targets;
- the report follows any table it draws.

Each waits while an input is in progress or about to be requested, and asks once per change (a
failed run is not retried every tick). Several days of a table are one backfill, which the daemon
runs as one run per range of days (BackfillPolicy.single_run). A consent decision is not
automated: a change of the customers or the erasure requests runs the whole zone in one run (the
sensor and the schedule).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import dagster as dg

from stedi_assets.defs.incremental import days_due, decided_from_newer
from stedi_assets.rules.catalog import Table
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.resources import InvalidSettings, StediStorage

if TYPE_CHECKING:  # the subsets a condition returns (Dagster exports no name for them)
    from dagster._core.asset_graph_view.entity_subset import EntitySubset


class _ReadsTheLakehouse(dg.AutomationCondition):
    """A condition of a reading table answered from the lakehouse the code location is configured
    with (STEDI_LAKEHOUSE_URI); false for every partition when it cannot be read (the schedule's run
    catches up)."""

    def __init__(self, declared: Table) -> None:
        self.declared = declared

    @property
    def requires_cursor(self) -> bool:
        return False

    def true_subset(self, context: dg.AutomationContext, lakehouse: Lakehouse) -> EntitySubset:
        raise NotImplementedError

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        true_subset = context.get_empty_subset()
        if not context.candidate_subset.is_empty:
            try:
                true_subset = self.true_subset(context, StediStorage().lakehouse)
            except (StorageError, InvalidSettings) as error:
                context.log.warning(f"{self.declared.name}: cannot read the lakehouse: {error}")
        return dg.AutomationResult(context=context, true_subset=true_subset)


class DaysToRecompute(_ReadsTheLakehouse):
    """True for the event days a run of the reading table would recompute now (incremental.days_due)."""

    @property
    def description(self) -> str:
        return f"Days whose inputs changed since {self.declared.name} was last built"

    def true_subset(self, context: dg.AutomationContext, lakehouse: Lakehouse) -> EntitySubset:
        days = days_due(lakehouse, self.declared)
        return context.candidate_subset.compute_intersection_with_partition_keys(days)


class DecidedFromNewer(_ReadsTheLakehouse):
    """True (for every candidate partition) when a table the reading table was decided from has a
    newer version than its last build was made from (incremental.decided_from_newer): a run would
    rebuild it whole."""

    @property
    def description(self) -> str:
        return f"{self.declared.name} was decided from an older version of a table it depends on"

    def true_subset(self, context: dg.AutomationContext, lakehouse: Lakehouse) -> EntitySubset:
        newer = decided_from_newer(lakehouse, self.declared)
        return context.candidate_subset if newer else context.get_empty_subset()


class InputRequestedThisTick(dg.AutomationCondition):
    """True while any input of the asset is requested in the same evaluation, whatever its
    partitions (Dagster's `will_be_requested` counts only inputs that can run in the same run): a
    table waits a tick for a table it is computed from, instead of running before and again after."""

    @property
    def requires_cursor(self) -> bool:
        return False

    @property
    def description(self) -> str:
        return "An input is requested this tick"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        inputs = context.asset_graph.get(context.root_context.key).parent_keys
        requested = any(
            not subset.is_empty for key, subset in context.request_subsets_by_key.items() if key in inputs
        )
        return dg.AutomationResult(
            context=context,
            true_subset=context.candidate_subset if requested else context.get_empty_subset(),
        )


# `data_version` of an output (customer_curated's) is a beta parameter; what it does here is tested
warnings.filterwarnings("ignore", message=".*`data_version`.*", category=dg.BetaWarning)


def _updated(selection: dg.AssetSelection) -> dg.AutomationCondition:
    return dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated()).allow(selection)


def _changed(selection: dg.AssetSelection) -> dg.AutomationCondition:
    return dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed()).allow(
        selection
    )


def _once_inputs_settle(trigger: dg.AutomationCondition, label: str) -> dg.AutomationCondition:
    """`trigger` held until the asset is requested or updated, while no input runs or is requested."""
    return (
        trigger.since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~InputRequestedThisTick()
        & ~dg.AutomationCondition.in_progress()
    ).with_label(label)


def reading_table(declared: Table, inputs: list[str], decided_from: list[str]) -> dg.AutomationCondition:
    """A reading table: the days it would recompute, when its day-partitioned `inputs` were updated
    or such days appear (a run left them pending); its newest partition when the data version of a
    table it is decided from (`decided_from`) changed and its last build was made from an older
    version of it: that rebuilds it whole, whatever day a run targets."""
    due = DaysToRecompute(declared)
    trigger = (_updated(dg.AssetSelection.assets(*inputs)) & due) | due.newly_true()
    if decided_from:
        trigger |= (
            _changed(dg.AssetSelection.assets(*decided_from))
            & dg.AutomationCondition.in_latest_time_window()
            & DecidedFromNewer(declared)
        )
    return _once_inputs_settle(trigger, f"days of {declared.name} to recompute")


def follows(*inputs: str) -> dg.AutomationCondition:
    """An unpartitioned table: once after any of `inputs` (any of its partitions) was updated."""
    return _once_inputs_settle(_updated(dg.AssetSelection.assets(*inputs)), f"after {', '.join(inputs)}")
