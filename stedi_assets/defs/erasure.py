"""Erasure requests: the erasure_log asset, which every ingest reads to drop the erased people.

The log holds keyed hashes only. Once a request is recorded it stays in force even if its file is
removed; the ingest steps drop every line of an erased identity (the conservation check counts them
as erased), and customer_trusted then removes the person from the trusted and curated zones; each
table that loses them is vacuumed through every version (the IO manager's rule).
"""

from __future__ import annotations

import dagster as dg
import polars as pl

from stedi_assets.defs.factories import KINDS, STORAGE_RETRY, table_checks
from stedi_assets.defs.partitions import SINGLE_RUN
from stedi_assets.rules import erasure, parsing
from stedi_assets.rules.catalog import CUSTOMER, ERASURE_LOG, LINE_NUMBER, QUARANTINE, SOURCE_FILE, TABLES
from stedi_assets.rules.identity import SUBJECT_ID, pseudonym_keys
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.io_manager import Publication, held_metadata
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.metadata import OPTIONAL_INPUT, definition_metadata
from stedi_assets.storage.resources import StediStorage, as_failure, pseudonym_of


def _table(lakehouse: Lakehouse, name: str, schema: dict[str, pl.DataType]) -> pl.LazyFrame:
    declared = TABLES[name]
    uri = lakehouse.table_uri(declared.zone, name)
    return lakehouse.scan(uri) if lakehouse.exists(uri) else pl.LazyFrame(schema=schema)


def _found_in(lakehouse: Lakehouse, erased: pl.LazyFrame, secret: bytes) -> pl.LazyFrame:
    """(hashed_id, table) for every table that holds an erased identity now."""
    found = []
    for declared in TABLES.values():
        if declared.zone == QUARANTINE or not declared.identities:  # raw lines: not an identity column
            continue
        uri = lakehouse.table_uri(declared.zone, declared.name)
        if not lakehouse.exists(uri):
            continue
        frame = lakehouse.scan(uri)
        for column in declared.identities:
            hashed = (
                frame.select(pl.col(column).alias("hashed_id")).unique()
                if column == SUBJECT_ID
                else pseudonym_keys(frame, column, secret, "hashed_id")
            )
            found.append(
                erased.join(hashed, on="hashed_id", how="semi").select(
                    "hashed_id", table=pl.lit(declared.name)
                )
            )
    return pl.concat(found) if found else pl.LazyFrame(schema={"hashed_id": pl.String, "table": pl.String})


@dg.asset(
    name=ERASURE_LOG.name,
    group_name=ERASURE_LOG.zone,
    kinds=KINDS,
    description=ERASURE_LOG.description,
    metadata={**definition_metadata(ERASURE_LOG), OPTIONAL_INPUT: True},
    retry_policy=STORAGE_RETRY,
    backfill_policy=SINGLE_RUN,
    pool=f"delta_{ERASURE_LOG.name}",
)
def erasure_log(storage: StediStorage) -> dg.MaterializeResult:
    """Reads <landing>/erasure_requests/*.json (if any) into the log of erasures in force."""
    key = pseudonym_of(storage)
    lakehouse = storage.lakehouse
    try:
        lines = erasure.request_lines(
            storage.landing.read_lines(erasure.ERASURE_REQUESTS, optional=True).lazy()
        ).collect()
        unreadable = lines.filter(pl.col("email").is_null())
        if unreadable.height:
            # someone asked to be forgotten and we cannot tell who: stop rather than ingest them
            where = ", ".join(
                f"{f} line {n}" for f, n in unreadable.select(SOURCE_FILE, LINE_NUMBER).rows()[:5]
            )
            raise dg.Failure(
                f"{unreadable.height} erasure request lines name no readable email ({where}): fix them "
                'as {"email": "...", "requestedAt": <epoch ms>} lines.',
                allow_retries=False,
            )
        log_uri = lakehouse.table_uri(ERASURE_LOG.zone, ERASURE_LOG.name)
        if not lines.height and lakehouse.exists(log_uri):
            # no request file: the erasures in force stay as recorded (a request is never withdrawn)
            kinds = lakehouse.reading(log_uri, lakehouse.scan(log_uri).select("kind")).get_column("kind")
            subjects = int((kinds == erasure.SUBJECT).sum())
            counts = {"subjects_erased": subjects, "devices_erased": kinds.len() - subjects}
            return dg.MaterializeResult(value=None, metadata={**held_metadata(lakehouse, log_uri), **counts})
        landing_schema = {c.name: c.dtype for c in CUSTOMER.landing.columns}
        rejects_schema = {c.name: c.dtype for c in CUSTOMER.rejects.columns}
        customer_landing = _table(lakehouse, CUSTOMER.landing.name, landing_schema)
        customer_rejects = _table(lakehouse, CUSTOMER.rejects.name, rejects_schema)
        if lines.height:
            # The serials a requester claimed are read from the customer files as well: on a new
            # lakehouse (or for a record delivered with the request) the tables do not hold them
            # yet, and once the ingest has dropped the person's lines they never will.
            delivered = parsing.parse_lines(
                storage.landing.read_lines(CUSTOMER.name, optional=True).lazy(), CUSTOMER
            )
            customer_landing = pl.concat(
                [customer_landing, parsing.accepted_rows(delivered, CUSTOMER)], how="diagonal_relaxed"
            )
            customer_rejects = pl.concat(
                [customer_rejects, parsing.rejected_rows(delivered)], how="diagonal_relaxed"
            )
        new = erasure.erased_identities(
            lines.lazy().select("email", "requestedAt"), customer_landing, customer_rejects, key.secret
        ).collect()
        previous = _table(lakehouse, ERASURE_LOG.name, ERASURE_LOG.dtypes).collect()
        in_force = (
            pl.concat([previous.drop("found_in"), new], how="diagonal_relaxed")
            .group_by("hashed_id", "kind")
            .agg(pl.col("requested_at").min())
            .lazy()
        )
        # where a newly recorded identity was found; earlier ones keep what was recorded then
        recorded = previous.select("hashed_id").lazy()
        unrecorded = new.lazy().join(recorded, on="hashed_id", how="anti")
        found = (
            _found_in(lakehouse, unrecorded, key.secret)
            if new.height
            else pl.LazyFrame(schema={"hashed_id": pl.String, "table": pl.String})
        )
        earlier = (
            previous.lazy().select("hashed_id", "found_in").explode("found_in").rename({"found_in": "table"})
        )
        tables = (
            pl.concat([earlier, found])
            .drop_nulls()
            .group_by("hashed_id")
            .agg(found_in=pl.col("table").unique().sort())
        )
        log = (
            in_force.join(tables, on="hashed_id", how="left")
            .with_columns(pl.col("found_in").fill_null(pl.lit([], pl.List(pl.String))))
            .select(list(ERASURE_LOG.dtypes))
            .sort("kind", "hashed_id")
            .collect()
        )
    except StorageError as error:
        raise as_failure(error) from error
    subjects = log.filter(pl.col("kind") == erasure.SUBJECT).height
    return dg.MaterializeResult(
        value=Publication(log.lazy()),
        metadata={"subjects_erased": subjects, "devices_erased": log.height - subjects},
    )


erasure_assets = [erasure_log]
erasure_checks = [table_checks(ERASURE_LOG)]
