"""The one place that reads the environment: STEDI_* settings and the S3 options."""

from __future__ import annotations

import pytest

from stedi_assets.storage.environment import S3Options, settings_from_environment, variable

NAMES = ("landing_uri", "lakehouse_uri", "ml_join")


def test_variable_of_a_setting():
    assert variable("ml_join") == "STEDI_ML_JOIN"
    assert variable("lakehouse_uri") == "STEDI_LAKEHOUSE_URI"


def test_settings_from_environment_fills_only_missing_names():
    given = {"landing_uri": "given/landing"}
    environ = {
        "STEDI_LANDING_URI": "env/landing",
        "STEDI_LAKEHOUSE_URI": "env/lakehouse",
        "STEDI_EXPECTATIONS_FILE": "not/asked/for.json",
    }

    filled = settings_from_environment(given, NAMES, environ)

    assert filled == {"landing_uri": "given/landing", "lakehouse_uri": "env/lakehouse"}
    assert given == {"landing_uri": "given/landing"}, "the given settings are copied, not changed"


def test_settings_from_environment_ignores_empty_variables():
    environ = {"STEDI_LANDING_URI": "", "STEDI_ML_JOIN": "same_customer"}

    assert settings_from_environment({}, NAMES, environ) == {"ml_join": "same_customer"}


def test_settings_from_environment_reads_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("STEDI_LAKEHOUSE_URI", "s3://lake/root")

    assert settings_from_environment({"ml_join": "seed"}, NAMES) == {
        "ml_join": "seed",
        "lakehouse_uri": "s3://lake/root",
    }


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, S3Options(None, "us-east-1")),
        ({"AWS_ENDPOINT_URL": "", "AWS_REGION": ""}, S3Options(None, "us-east-1")),
        ({"AWS_DEFAULT_REGION": "eu-west-1"}, S3Options(None, "eu-west-1")),
        ({"AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "eu-west-1"}, S3Options(None, "eu-central-1")),
        ({"AWS_REGION": "", "AWS_DEFAULT_REGION": "eu-west-1"}, S3Options(None, "eu-west-1")),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}, S3Options("http://127.0.0.1:9000", "us-east-1")),
    ],
    ids=["nothing", "empty", "default-region", "region-wins", "empty-region", "endpoint"],
)
def test_s3_options_from_environment(environ: dict[str, str], expected: S3Options):
    assert S3Options.from_environment(environ) == expected


def test_s3_options_from_the_process_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://minio.example:9000")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")

    assert S3Options.from_environment() == S3Options("https://minio.example:9000", "ap-south-1")


def test_endpoint_names_the_default_when_none_is_set():
    assert S3Options().endpoint == "the default AWS endpoint"
    assert S3Options("http://127.0.0.1:9000").endpoint == "http://127.0.0.1:9000"


TIMEOUTS = {"connect_timeout": "5s", "timeout": "60s", "retry_timeout": "60s"}
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": ""}


def test_delta_options_allow_http_only_for_http_endpoints():
    plain = S3Options("http://127.0.0.1:9000", "eu-west-1").delta_options(CREDENTIALS)
    tls = S3Options("https://minio.example:9000", "eu-west-1").delta_options(CREDENTIALS)

    assert plain == {
        "AWS_ACCESS_KEY_ID": "key",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ALLOW_HTTP": "true",
        **TIMEOUTS,
    }
    assert tls == {
        "AWS_ACCESS_KEY_ID": "key",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "https://minio.example:9000",
        **TIMEOUTS,
    }


def test_delta_options_without_endpoint_or_credentials():
    """AWS itself: no endpoint override; credentials left to delta-rs' own chain when none are set."""
    options = S3Options.from_environment({"AWS_DEFAULT_REGION": "eu-west-1"}).delta_options({})

    assert options == {"AWS_REGION": "eu-west-1", **TIMEOUTS}


def test_delta_options_read_credentials_from_the_process_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "process-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "process-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "process-token")

    options = S3Options().delta_options()

    assert {k: options[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")} == {
        "AWS_ACCESS_KEY_ID": "process-key",
        "AWS_SECRET_ACCESS_KEY": "process-secret",
        "AWS_SESSION_TOKEN": "process-token",
    }


def test_boto3_client_uses_endpoint_region_and_retries():
    client = S3Options("http://127.0.0.1:9000", "eu-west-1").boto3_client()

    assert client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert client.meta.region_name == "eu-west-1"
    # botocore reads the legacy "max_attempts": 5 as five retries, six attempts in all.
    assert client.meta.config.retries == {"total_max_attempts": 6, "mode": "standard"}
    assert client.meta.config.connect_timeout == 5


def test_boto3_client_without_endpoint_talks_to_aws():
    client = S3Options(None, "eu-west-1").boto3_client()

    assert client.meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"
