"""Which landing files a write reads, from the manifest the table's last commit recorded."""

from __future__ import annotations

from datetime import UTC, datetime

from stedi_assets.storage.lakehouse import LandingFile
from stedi_assets.storage.manifest import Manifest, plan, signature

MONDAY, TUESDAY = datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 24, tzinfo=UTC)


def listed(name: str, size: int = 10, modified: datetime = MONDAY) -> LandingFile:
    return LandingFile(f"/landing/accelerometer/{name}", size, modified)


def held(*files: LandingFile, erased: int = 0, erasures: int = 0) -> Manifest:
    return Manifest({f.uri: {**signature(f), "lines": 2} for f in files}, erased, erasures)


def test_new_files_are_read_alone_and_appended():
    a, b = listed("a.json"), listed("b.json")
    write = plan(held(a), [a, b], 0)
    assert (write.uris, write.append, write.replaced) == ([b.uri], True, ())
    assert list(write.manifest({b.uri: 3}, 0, 0).files) == [a.uri, b.uri]


def test_a_changed_file_is_read_again_and_replaces_its_rows_the_others_are_not_read():
    a, b = listed("a.json"), listed("b.json")
    corrected = listed("a.json", modified=TUESDAY)
    write = plan(held(a, b), [corrected, b], 0)
    assert (write.uris, write.append, write.replaced) == ([a.uri], True, (a.uri,))
    after = write.manifest({a.uri: 5}, 0, 0)
    assert after.files[a.uri] == {**signature(corrected), "lines": 5}
    assert after.lines == 7


def test_a_vanished_file_leaves_with_its_rows_and_nothing_is_read():
    a, b = listed("a.json"), listed("b.json")
    write = plan(held(a, b), [b], 0)
    assert (write.uris, write.append, write.replaced) == ([], True, (a.uri,))
    assert list(write.manifest({}, 0, 0).files) == [b.uri]


def test_a_new_erasure_rebuilds_from_every_file():
    a, b = listed("a.json"), listed("b.json")
    write = plan(held(a, b), [a, b], 1)
    assert (write.uris, write.append, write.replaced) == ([a.uri, b.uri], False, ())


def test_a_changed_file_under_erased_lines_rebuilds_their_count_is_not_kept_per_file():
    a, b = listed("a.json"), listed("b.json")
    write = plan(held(a, b, erased=1, erasures=1), [listed("a.json", size=11), b], 1)
    assert (write.uris, write.append, write.replaced) == ([a.uri, b.uri], False, ())


def test_no_manifest_rebuilds_from_every_file():
    a = listed("a.json")
    write = plan(None, [a], 0)
    assert (write.uris, write.append) == ([a.uri], False)
