"""The zone rules as pure Polars: LazyFrame in, LazyFrame out, no Dagster and no I/O.

Every rule here is what an asset computes and what the tests pin down on hand-made frames.
Identities (emails, serial numbers) are compared in their canonical form (rules/identity.py) on
both sides of every join, because the app and the website do not agree on how they are spelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import polars as pl

from stedi_assets.rules.catalog import (
    ACCELEROMETER_TRUSTED,
    CUSTOMER_CURATED,
    CUSTOMER_TRUSTED,
    LINE_NUMBER,
    MACHINE_LEARNING_CURATED,
    SOURCE_FILE,
    STEP_TRAINER_TRUSTED,
    Table,
    with_event_day,
)
from stedi_assets.rules.identity import (
    KEY,
    SUBJECT_ID,
    join_on_identity,
    keys,
    pseudonym_keys,
    spellings,
    with_key,
    with_pseudonym,
    with_record_key,
)


class MlJoin(StrEnum):
    """How machine_learning_curated pairs a Step Trainer reading with accelerometer readings."""

    seed = "seed"
    """Same timestamp only: the rule of the original Glue job; pairs different customers' readings."""
    same_customer = "same_customer"
    """Same timestamp and the accelerometer's owner owns the Step Trainer."""


class MlIdentity(StrEnum):
    """How machine_learning_curated identifies the person behind each accelerometer reading."""

    subject_id = "subject_id"
    """A keyed hash of the email only: the training table is pseudonymous."""
    email = "email"
    """The keyed hash and the email (`user`), for teams that need to reach the person."""


class ConsentPolicy(StrEnum):
    """Which readings of a consenting customer the trusted zone takes."""

    any_time = "any_time"
    """Every reading, whenever it was taken: the rule of the original Glue jobs."""
    from_consent_date = "from_consent_date"
    """Only readings taken at or after the customer's shareWithResearchAsOfDate."""


def has_research_consent() -> pl.Expr:
    consent = pl.col("shareWithResearchAsOfDate")
    return consent.is_not_null() & (consent != 0)


def _declared(frame: pl.LazyFrame, declared: Table) -> pl.LazyFrame:
    """The declared columns in declared order (an optional one only when the frame has it)."""
    frame = with_event_day(frame, declared)
    present = set(frame.collect_schema().names())
    return frame.select(
        pl.col(c.name).cast(c.dtype) for c in declared.columns if not c.optional or c.name in present
    )


def customer_current_state(customer_landing: pl.LazyFrame) -> pl.LazyFrame:
    """One row per customer (by canonical email): the record with the latest lastUpdateDate.

    Ties are broken by source file, then line, so the latest delivery wins deterministically.
    """
    order = ["lastUpdateDate", SOURCE_FILE, LINE_NUMBER]
    # one sort of the table, then the last row of each customer: a group keeps its rows in the order
    # they come (Polars guarantees it), and sorting once is twice as fast as sorting each group
    return (
        with_record_key(customer_landing, "email")
        .sort(order, nulls_last=False)
        .group_by(KEY)
        .agg(pl.all().last())
        .drop(KEY)
    )


_STRING_PAIR = r'(?i)"{key}"\s*:\s*"((?:[^"\\]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{{4}})*)"'
_NUMBER_PAIR = r'(?i)"{key}"\s*:\s*"?\s*(\d+)'


def json_string(raw: pl.Expr, key: str) -> pl.Expr:
    """The value of the first `"key": "..."` pair in a raw line, JSON escapes decoded (`\\u0040` is @)."""
    content = raw.str.extract(_STRING_PAIR.format(key=key), 1)
    # What JSON forbids in a string and would make the decoding raise (failing the run for one bad
    # line): control characters, and lone escaped UTF-16 surrogates. An escaped backslash and a
    # valid surrogate pair (an emoji written as `\\ud83d\\ude00`) are matched first and kept, so the
    # value decodes to what the line's own JSON parse gives: an erasure request names the person
    # its email names, never the same email with a character dropped.
    decodable = content.str.replace_all(r"[\x00-\x1f]", "").str.replace_all(
        r"(\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})|\\u[dD][89a-fA-F][0-9a-fA-F]{2}",
        "$1",
    )
    # not pl.format: on a multi-chunk column the streaming engine panics in it (polars 2.1)
    return (pl.lit('"') + decodable + pl.lit('"')).str.json_decode(pl.String)


def recovered_customer_claims(customer_rejects: pl.LazyFrame) -> pl.LazyFrame:
    """What each quarantined customer line still says about whom it concerns.

    A line that could not be ingested may still be a withdrawal or a claim on a serial number, so
    its `"email": "..."`, `"serialNumber": "..."` and `lastUpdateDate` pairs are read from its raw
    text (keys in any case, JSON escapes decoded, whether or not the line is valid JSON). Lines
    naming neither are left out.
    """
    raw = pl.col("raw_line")
    return customer_rejects.select(
        email=json_string(raw, "email"),
        serialNumber=json_string(raw, "serialNumber"),
        lastUpdateDate=raw.str.extract(_NUMBER_PAIR.format(key="lastUpdateDate"), 1).cast(
            pl.Int64, strict=False
        ),
    ).filter(pl.col("email").is_not_null() | pl.col("serialNumber").is_not_null())


def customers_with_certain_consent(customer_landing: pl.LazyFrame) -> pl.LazyFrame:
    """Canonical emails (`_key`) of customers whose consent is certain.

    Records that cannot be ordered before the newest one (no lastUpdateDate, or the same
    lastUpdateDate as the newest) could each be the current state, so every one of them must
    consent: an undated or tied withdrawal means no consent.
    """
    newest = pl.col("lastUpdateDate").max().over(KEY)
    undecided = pl.col("lastUpdateDate").is_null() | (pl.col("lastUpdateDate") == newest)
    return (
        with_record_key(customer_landing, "email")
        .with_columns(_consents=has_research_consent() | ~undecided)
        .group_by(KEY)
        .agg(pl.col("_consents").all())
        .filter("_consents")
        .select(KEY)
    )


def customers_on_hold(customer_landing: pl.LazyFrame, customer_rejects: pl.LazyFrame) -> pl.LazyFrame:
    """Canonical emails (`_key`) of customers named by a quarantined line that no valid record supersedes.

    Such a line may be a withdrawal, so the customer is left out until the line is fixed or a valid
    record with a later lastUpdateDate than the line's arrives.
    """
    newest = (
        with_record_key(customer_landing, "email").group_by(KEY).agg(_newest=pl.col("lastUpdateDate").max())
    )
    claims = recovered_customer_claims(customer_rejects).filter(pl.col("email").is_not_null())
    return (
        with_record_key(claims, "email")
        .select(KEY, _updated=pl.col("lastUpdateDate"))
        .join(newest, on=KEY, how="left")
        .filter(~(pl.col("_updated") < pl.col("_newest")).fill_null(False))
        .select(KEY)
        .unique()
    )


def consenting_customers(customer_landing: pl.LazyFrame, customer_rejects: pl.LazyFrame) -> pl.LazyFrame:
    """The current record of each customer whose research consent is certain and not on hold."""
    return (
        with_record_key(customer_current_state(customer_landing), "email")
        .join(customers_with_certain_consent(customer_landing), on=KEY, how="semi")
        .join(customers_on_hold(customer_landing, customer_rejects), on=KEY, how="anti")
        .drop(KEY)
    )


def customer_trusted(customer_landing: pl.LazyFrame, customer_rejects: pl.LazyFrame) -> pl.LazyFrame:
    """Customers whose consent is certain: fails closed on undated, tied and quarantined records."""
    return _declared(consenting_customers(customer_landing, customer_rejects), CUSTOMER_TRUSTED)


def _consenting(customer_trusted: pl.LazyFrame) -> pl.LazyFrame:
    """The trusted customers' canonical emails (`_key`) with their consent dates (`_since`)."""
    return with_record_key(customer_trusted, "email").select(KEY, _since=pl.col("shareWithResearchAsOfDate"))


def trusted_users(accelerometer_landing: pl.LazyFrame, customer_trusted: pl.LazyFrame) -> pl.LazyFrame:
    """The spellings of `user` in the readings that name a trusted customer, with the customer's
    consent date (`_since`): a few thousand rows, decided once for every part of a write."""
    return spellings(accelerometer_landing, "user", _consenting(customer_trusted))


def accelerometer_trusted(
    accelerometer_landing: pl.LazyFrame,
    customer_trusted: pl.LazyFrame,
    policy: ConsentPolicy = ConsentPolicy.any_time,
    users: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """Readings whose user is a trusted customer (under from_consent_date: taken since consenting),
    each distinct reading once. `users`: trusted_users of these readings (or more), decided already."""
    readings = join_on_identity(accelerometer_landing, "user", _consenting(customer_trusted), spelled=users)
    if ConsentPolicy(policy) is ConsentPolicy.from_consent_date:
        readings = readings.filter(pl.col("timestamp") >= pl.col("_since"))
    return _declared(readings, ACCELEROMETER_TRUSTED).unique()


def customer_curated(customer_trusted: pl.LazyFrame, accelerometer_trusted: pl.LazyFrame) -> pl.LazyFrame:
    """Trusted customers with at least one trusted accelerometer reading."""
    curated = with_record_key(customer_trusted, "email").join(
        keys(accelerometer_trusted, "user"), on=KEY, how="semi"
    )
    return _declared(curated, CUSTOMER_CURATED)


def _claims(frame: pl.LazyFrame) -> pl.LazyFrame:
    serials = with_record_key(frame, "serialNumber", "_serial")
    return with_record_key(serials, "email", "_email").select("_serial", "_email")


def serial_claims(customer_landing: pl.LazyFrame, customer_rejects: pl.LazyFrame) -> pl.LazyFrame:
    """Every (`_serial`, `_email`) claim of any customer record, accepted or quarantined, canonical.

    A quarantined line's claimant is null when no email can be read from it.
    """
    quarantined = recovered_customer_claims(customer_rejects).filter(pl.col("serialNumber").is_not_null())
    return pl.concat([_claims(customer_landing), _claims(quarantined)])


def attributable_serials(
    customer_landing: pl.LazyFrame, customer_curated: pl.LazyFrame, customer_rejects: pl.LazyFrame
) -> pl.LazyFrame:
    """Canonical serial numbers (`_serial`) of curated customers' devices that no one else claims.

    The fulfilment website reused serial numbers; a device also claimed by a customer who is not
    curated, or by a quarantined record whose claimant cannot be read, cannot be told apart, so its
    readings stay out of the trusted zone.
    """
    curated = keys(customer_curated, "email", "_email")
    owned = keys(customer_curated, "serialNumber", "_serial")
    # a null claimant (no readable email) matches no curated customer, so it stays a foreign claim
    foreign = serial_claims(customer_landing, customer_rejects).join(curated, on="_email", how="anti")
    return owned.join(foreign.select("_serial"), on="_serial", how="anti")


def ambiguous_serials(
    customer_landing: pl.LazyFrame, customer_curated: pl.LazyFrame, customer_rejects: pl.LazyFrame
) -> pl.LazyFrame:
    """Canonical serials of curated customers that are also claimed by someone who is not curated."""
    curated = keys(customer_curated, "serialNumber", "_serial")
    return curated.join(
        attributable_serials(customer_landing, customer_curated, customer_rejects), on="_serial", how="anti"
    ).rename({"_serial": "serialNumber"})


def step_trainer_trusted(
    step_trainer_landing: pl.LazyFrame,
    customer_curated: pl.LazyFrame,
    customer_landing: pl.LazyFrame,
    customer_rejects: pl.LazyFrame,
    policy: ConsentPolicy = ConsentPolicy.any_time,
) -> pl.LazyFrame:
    """Readings of devices owned by curated customers (and by nobody else), each distinct reading once;
    under from_consent_date only those taken since the owner consented (the latest owner's date when
    several curated customers claim the device)."""
    devices = trusted_devices(customer_curated, customer_landing, customer_rejects, policy)
    return readings_of_devices(step_trainer_landing, devices)


def trusted_devices(
    customer_curated: pl.LazyFrame,
    customer_landing: pl.LazyFrame,
    customer_rejects: pl.LazyFrame,
    policy: ConsentPolicy = ConsentPolicy.any_time,
) -> pl.LazyFrame:
    """The devices whose readings are trusted (`_serial`), and under from_consent_date since when
    (`_since`, the latest of their curated owners' consent dates)."""
    serials = attributable_serials(customer_landing, customer_curated, customer_rejects)
    if ConsentPolicy(policy) is ConsentPolicy.any_time:
        return serials
    since = (
        with_record_key(customer_curated, "serialNumber", "_serial")
        .group_by("_serial")
        .agg(_since=pl.col("shareWithResearchAsOfDate").max())
    )
    return serials.join(since, on="_serial")


def device_serials(step_trainer_landing: pl.LazyFrame, devices: pl.LazyFrame) -> pl.LazyFrame:
    """The spellings of `serialNumber` in the readings that name one of `devices` (trusted_devices),
    with its consent date when it has one: a few thousand rows, decided once for every part."""
    return spellings(step_trainer_landing, "serialNumber", devices, "_serial")


def readings_of_devices(
    step_trainer_landing: pl.LazyFrame, devices: pl.LazyFrame, serials: pl.LazyFrame | None = None
) -> pl.LazyFrame:
    """The readings of `devices` (see trusted_devices), each distinct reading once. `serials`:
    device_serials of these readings (or more), decided already."""
    readings = join_on_identity(step_trainer_landing, "serialNumber", devices, "_serial", spelled=serials)
    if "_since" in devices.collect_schema().names():
        readings = readings.filter(pl.col("sensorReadingTime") >= pl.col("_since"))
    return _declared(readings, STEP_TRAINER_TRUSTED).unique()


def _owner_serials(customer_curated: pl.LazyFrame) -> pl.LazyFrame:
    owners = with_record_key(customer_curated, "email", "_user")
    return with_record_key(owners, "serialNumber", "_owner_serial").select("_user", "_owner_serial")


def machine_learning_curated(
    step_trainer_trusted: pl.LazyFrame,
    accelerometer_trusted: pl.LazyFrame,
    customer_curated: pl.LazyFrame,
    secret: bytes,
    ml_join: MlJoin = MlJoin.seed,
    ml_identity: MlIdentity = MlIdentity.subject_id,
    subjects: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """Each Step Trainer reading paired with the accelerometer readings taken at the same time, the
    phone's owner identified by `subject_id` (keyed with `secret`), and by email only on request.
    `subjects`: the pseudonym_map of these readings' users (or more), made already."""
    # pseudonymised before the join: the distinct owners are read from the readings, not the pairs
    accelerometer_trusted = with_pseudonym(accelerometer_trusted, "user", secret, mapped=subjects)
    if MlJoin(ml_join) is MlJoin.seed:
        paired = step_trainer_trusted.join(
            accelerometer_trusted,
            left_on="sensorReadingTime",
            right_on="timestamp",
            how="inner",
            coalesce=False,
        )
    else:
        owned = with_key(accelerometer_trusted, "user", "_user").join(
            _owner_serials(customer_curated), on="_user"
        )
        paired = with_key(step_trainer_trusted, "serialNumber", "_serial").join(
            owned,
            left_on=["sensorReadingTime", "_serial"],
            right_on=["timestamp", "_owner_serial"],
            how="inner",
            coalesce=False,
        )
    if MlIdentity(ml_identity) is MlIdentity.subject_id:
        paired = paired.drop("user")
    return _declared(paired, MACHINE_LEARNING_CURATED)


def cross_customer_pairs(
    machine_learning_curated: pl.LazyFrame, customer_curated: pl.LazyFrame, secret: bytes
) -> pl.LazyFrame:
    """Training rows whose accelerometer owner (by subject_id) does not own the Step Trainer of the row.

    Decided for each distinct (subject_id, serialNumber) pair, a few thousand, then the rows of the
    offending pairs are read: memory is bounded by the pairs, not the rows.
    """
    owners = with_pseudonym(customer_curated, "email", secret, "_subject")
    owners = with_record_key(owners, "serialNumber", "_owner_serial").select("_subject", "_owner_serial")
    pairs = machine_learning_curated.select(SUBJECT_ID, "serialNumber").unique()
    offending = (
        with_key(pairs, "serialNumber", "_serial")
        .join(owners, left_on=SUBJECT_ID, right_on="_subject", how="left")
        .filter(pl.col("_owner_serial").is_null() | (pl.col("_owner_serial") != pl.col("_serial")))
        .select(SUBJECT_ID, "serialNumber")
    )
    return machine_learning_curated.join(
        offending, on=[SUBJECT_ID, "serialNumber"], how="semi", nulls_equal=True, maintain_order="left"
    )


SINCE = "_since"
"""The consent date (epoch ms) a decision's identity carries under consent_policy=from_consent_date."""


def _rows_of(
    frame: pl.LazyFrame, column: str, time: str | None, allowed: pl.LazyFrame, key: str
) -> pl.LazyFrame:
    """The rows of `frame` whose identity in `column` is in `allowed` (`key`), and, when `allowed`
    carries consent dates and the table times its rows by `time`, taken at or after that date."""
    if time and SINCE in allowed.collect_schema().names():
        return join_on_identity(frame, column, allowed, key).filter(pl.col(time) >= pl.col(SINCE)).drop(SINCE)
    return join_on_identity(frame, column, allowed.select(key), key, how="semi")


def within_consent(
    frame: pl.LazyFrame, declared: Table, consenting: pl.LazyFrame, attributable: pl.LazyFrame
) -> pl.LazyFrame:
    """The rows of a trusted or curated table that a consent decision still allows.

    `consenting` holds the canonical emails (`_key`) of consenting customers, `attributable` the
    canonical serials (`_serial`) only consenting customers claim, each with its consent date
    (`_since`) under from_consent_date. A row stays when its person consents and its device is
    attributable, and was taken at or after both consent dates where the table says when.
    """
    if declared.person:
        frame = _rows_of(frame, declared.person, declared.person_time, consenting, KEY)
    if declared.device:
        frame = _rows_of(frame, declared.device, declared.device_time, attributable, "_serial")
    return frame


def _before_consent(
    frame: pl.LazyFrame, column: str, time: str | None, allowed: pl.LazyFrame, key: str
) -> list:
    """The canonical identities (as `_key`) with a row taken before their consent date, if dated."""
    if not time or SINCE not in allowed.collect_schema().names():
        return []
    early = (
        with_key(frame, column, key).join(allowed, on=key, how="inner").filter(pl.col(time) < pl.col(SINCE))
    )
    return [early.select(pl.col(key).alias(KEY)).unique()]


def identities_outside_consent(
    frame: pl.LazyFrame, declared: Table, consenting: pl.LazyFrame, attributable: pl.LazyFrame
) -> pl.LazyFrame:
    """The distinct canonical identities (`_key`) in a table with a row the consent decision does not
    allow: emails of people who do not consent, serials not attributable to one who does, and under
    from_consent_date those with a reading from before the consent date."""
    outside = []
    if declared.person:
        outside.append(keys(frame, declared.person).join(consenting.select(KEY), on=KEY, how="anti"))
        outside += _before_consent(frame, declared.person, declared.person_time, consenting, KEY)
    if declared.device:
        serials = keys(frame, declared.device, "_serial").join(
            attributable.select("_serial"), on="_serial", how="anti"
        )
        outside.append(serials.rename({"_serial": KEY}))
        outside += _before_consent(frame, declared.device, declared.device_time, attributable, "_serial")
    for column in (c for c in (declared.person, declared.device) if c):  # a row about no one: no consent
        outside.append(
            frame.filter(pl.col(column).is_null()).select(pl.col(column).cast(pl.String).alias(KEY)).head(1)
        )
    return pl.concat(outside) if outside else pl.LazyFrame(schema={KEY: pl.String})


@dataclass(frozen=True)
class ConsentDecision:
    """Who may be in the trusted and curated zones after a consent decision, collected once.

    `consenting` holds canonical emails (`_key`), `subjects` their keyed hashes (`_key`), and
    `attributable` the canonical serials (`_serial`) that only consenting customers claim; under
    consent_policy=from_consent_date each also carries its consent date (`_since`: a device's is
    the latest of its owners'). The decide-first withdrawal and `stedi audit` both ask it which
    rows a table may keep.
    """

    consenting: pl.LazyFrame
    subjects: pl.LazyFrame
    attributable: pl.LazyFrame

    @classmethod
    def of(
        cls,
        decided: pl.LazyFrame,
        customer_landing: pl.LazyFrame,
        customer_rejects: pl.LazyFrame,
        secret: bytes,
        erased: pl.LazyFrame | None = None,
        policy: ConsentPolicy = ConsentPolicy.any_time,
    ) -> ConsentDecision:
        """From the consenting customers' records (`decided`), less any erased canonical emails."""
        if erased is not None:
            decided = with_record_key(decided, "email").join(erased, on=KEY, how="anti").drop(KEY)
        decided = decided.collect().lazy()
        consenting = keys(decided, "email")
        subjects = pseudonym_keys(decided, "email", secret)
        attributable = attributable_serials(customer_landing, decided, customer_rejects)
        if ConsentPolicy(policy) is ConsentPolicy.from_consent_date:
            since = pl.col("shareWithResearchAsOfDate").alias(SINCE)
            consenting = with_record_key(decided, "email").select(KEY, since)
            subjects = with_pseudonym(decided, "email", secret, into=KEY).select(KEY, since)
            owners = with_record_key(decided, "serialNumber", "_serial").group_by("_serial").agg(since.max())
            attributable = attributable.join(owners, on="_serial", how="inner")
        collected = pl.collect_all([consenting, subjects, attributable])  # the three at once
        return cls(*(frame.lazy() for frame in collected))

    def _people(self, declared: Table) -> pl.LazyFrame:
        return self.subjects if declared.person == SUBJECT_ID else self.consenting

    def outside(self, frame: pl.LazyFrame, declared: Table) -> pl.LazyFrame:
        """The distinct identities in `frame` this decision does not allow (`_key`)."""
        return identities_outside_consent(frame, declared, self._people(declared), self.attributable)

    def within(self, frame: pl.LazyFrame, declared: Table) -> pl.LazyFrame:
        """The rows of `frame` this decision allows."""
        return within_consent(frame, declared, self._people(declared), self.attributable)
