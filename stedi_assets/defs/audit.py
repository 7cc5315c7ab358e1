"""`stedi audit`: proof that no one who does not consent now is anywhere they must not be.

Who must not be found is decided from the landing files themselves, by the same fail-closed rules
the lakehouse applies: everyone named by a customer record, accepted or quarantined, whose consent
is not certain now. The audit then reads every retained version of every trusted and curated table
(a version whose log entry or data files are gone is not retained) and, when DAGSTER_HOME is set,
every event the Dagster instance stores. Its own output names people by keyed hash only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import dagster as dg
import polars as pl

from stedi_assets.defs.instance_audit import find_values, purge_values
from stedi_assets.defs.trusted import DOWNSTREAM_OF_CONSENT
from stedi_assets.rules import erasure, parsing, transforms
from stedi_assets.rules.catalog import ACCELEROMETER, CUSTOMER, CUSTOMER_TRUSTED, SOURCE_FILE, SOURCES, Table
from stedi_assets.rules.identity import KEY, keys, pseudonym, with_key
from stedi_assets.storage.errors import StorageError, TableMissing
from stedi_assets.storage.lakehouse import Lakehouse, LandingZone
from stedi_assets.storage.pseudonym import PseudonymKey

AUDITED_TABLES = (CUSTOMER_TRUSTED, *DOWNSTREAM_OF_CONSENT)
SAMPLE = 5


@dataclass(frozen=True)
class Excluded:
    """Who must not be found: keyed hashes, and the values to look for outside the lakehouse."""

    decision: transforms.ConsentDecision
    """Who may be in the trusted and curated zones now (erased people excluded)."""
    erased: pl.LazyFrame
    """Canonical emails (`_key`) of people who asked for erasure."""
    values: dict[str, list[str]]
    """subject_id -> the person's email, name and phone as the landing files spell them."""
    raw_files: dict[str, list[str]]
    """subject_id of an erased person -> landing files still holding their lines (the source owner's
    to erase)."""


def excluded(landing: LandingZone, key: PseudonymKey) -> Excluded:
    """Decides consent from the customer landing files, as ingest and customer_trusted do."""
    lines = landing.read_lines(CUSTOMER.name).lazy()
    parsed = parsing.parse_landing(lines, CUSTOMER, parsing.json_keys(lines)).collect().lazy()
    accepted, rejects = parsing.accepted_rows(parsed, CUSTOMER), parsing.rejected_rows(parsed)
    requested = erasure.requests(landing.read_lines(erasure.ERASURE_REQUESTS, optional=True).lazy()).collect()
    erased = keys(requested.lazy(), "email").collect()
    decided = transforms.customer_trusted(accepted, rejects)
    decision = transforms.ConsentDecision.of(decided, accepted, rejects, key.secret, erased.lazy())
    claims = transforms.recovered_customer_claims(rejects).select("email")
    people = pl.concat(
        [accepted.select("email", "customerName", "phone"), claims, requested.lazy().select("email")],
        how="diagonal",
    )
    outside = (
        with_key(people, "email")
        .join(decision.consenting, on=KEY, how="anti")
        .filter(pl.col(KEY).is_not_null())
        .collect()
    )
    values: dict[str, set[str]] = {}
    for row in outside.iter_rows(named=True):
        found = values.setdefault(pseudonym(row[KEY], key.secret), set())
        found.update(v.strip() for v in (row["email"], row["customerName"], row["phone"]) if v and v.strip())
    raw_files = _raw_files(landing, erased, key)
    values_by_subject = {s: sorted(v) for s, v in values.items()}
    return Excluded(decision, erased.lazy(), values_by_subject, raw_files)


def _raw_files(landing: LandingZone, erased: pl.DataFrame, key: PseudonymKey) -> dict[str, list[str]]:
    """Landing files that still hold a line naming an erased person (by email or phone user)."""
    found: dict[str, set[str]] = {}
    if erased.is_empty():
        return {}
    for source, column in ((CUSTOMER, "email"), (ACCELEROMETER, "user")):
        lines = landing.read_lines(source.name).lazy()
        named = lines.select(
            pl.col(SOURCE_FILE), person=transforms.json_string(pl.col(parsing.RAW_LINE), column)
        ).filter(pl.col("person").is_not_null())
        hits = (
            with_key(named, "person")
            .join(erased.lazy(), on=KEY, how="semi")
            .select(KEY, SOURCE_FILE)
            .unique()
        )
        for identity, file in hits.collect().iter_rows():
            found.setdefault(pseudonym(identity, key.secret), set()).add(file)
    return {subject: sorted(files) for subject, files in found.items()}


@dataclass(frozen=True)
class TableFinding:
    table: str
    version: int
    identities: int
    sample: list[str]
    """Keyed hashes of the people (or of the devices) found."""


def _versions(lakehouse: Lakehouse, uri: str) -> Iterator[tuple[int, pl.LazyFrame]]:
    """Every version of a table that can still be read."""
    try:
        latest = lakehouse.open(uri).version()
    except TableMissing:
        return
    for version in range(latest + 1):
        try:
            frame = lakehouse.scan(uri, version)
            frame.select(pl.len()).collect()
        except TableMissing:
            continue  # its log entry is gone: not retained
        except (StorageError, OSError, pl.exceptions.PolarsError) as error:
            if _file_gone(error):
                continue  # its data files were vacuumed: not retained
            # anything else (a timeout, a refused read, a corrupt file) is not proof of absence
            raise StorageError(f"Cannot audit {uri} version {version}: {_first_line(error)}") from error
        yield version, frame


def _file_gone(error: BaseException) -> bool:
    text = str(error).lower()
    return any(gone in text for gone in ("no such file", "not found", "does not exist", "notfound"))


def _first_line(error: BaseException) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def table_findings(lakehouse: Lakehouse, who: Excluded, key: PseudonymKey) -> list[TableFinding]:
    """Rows of excluded people or unattributable devices in any retained trusted or curated version."""
    found = []
    for source in SOURCES:  # an erased person leaves the landing zone too
        declared = source.landing
        uri = lakehouse.table_uri(declared.zone, declared.name)
        people = [c for c in declared.identities if c in ("email", "user")]
        for version, frame in _versions(lakehouse, uri):
            hits = [keys(frame, c).join(who.erased, on=KEY, how="semi") for c in people]
            identities = (
                lakehouse.reading(uri, pl.concat(hits).unique()).get_column(KEY).to_list() if hits else []
            )
            if identities:
                sample = sorted(pseudonym(v, key.secret) for v in identities)
                found.append(TableFinding(declared.name, version, len(identities), sample[:SAMPLE]))
    for declared in AUDITED_TABLES:
        uri = lakehouse.table_uri(declared.zone, declared.name)
        for version, frame in _versions(lakehouse, uri):
            outside = _present(frame, declared, who.decision)
            identities = lakehouse.reading(uri, outside).get_column(KEY).to_list()
            if identities:
                sample = sorted(v if _is_hash(v) else pseudonym(v or "", key.secret) for v in identities)
                found.append(TableFinding(declared.name, version, len(identities), sample[:SAMPLE]))
    return found


def _present(frame: pl.LazyFrame, declared: Table, decision: transforms.ConsentDecision) -> pl.LazyFrame:
    """Identities `decision` does not allow in one version; a version from before a column existed is
    checked on the columns it has (never skipped for lacking one)."""
    schema = set(frame.collect_schema().names())
    person = declared.person if declared.person in schema else None
    if declared.person and person is None and "user" in schema:
        person = "user"  # a training table from before subject_id named people by email
    device = declared.device if declared.device in schema else None
    if person is None and device is None:
        return pl.LazyFrame(schema={KEY: pl.String})
    return decision.outside(frame, replace(declared, person=person, device=device))


def _is_hash(value: str | None) -> bool:
    return value is not None and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


@dataclass(frozen=True)
class InstanceFinding:
    run_id: str
    event_type: str
    subject_id: str


def instance_findings(instance: dg.DagsterInstance, who: Excluded) -> list[InstanceFinding]:
    """Values of excluded people stored in the Dagster instance's event log."""
    owners, needles = _needles(who)
    return sorted(
        {InstanceFinding(f.run_id, f.event_type, owners[f.needle]) for f in find_values(instance, needles)},
        key=lambda f: (f.run_id, f.event_type, f.subject_id),
    )


def purge_instance(instance: dg.DagsterInstance, who: Excluded) -> int:
    """Redacts every value of an excluded person from the instance's stored events; how many events."""
    return purge_values(instance, _needles(who)[1])


def _needles(who: Excluded) -> tuple[list[str], list[str]]:
    pairs = [
        (subject, value) for subject, values in who.values.items() for value in values if len(value) >= 4
    ]
    return [s for s, _ in pairs], [v for _, v in pairs]
