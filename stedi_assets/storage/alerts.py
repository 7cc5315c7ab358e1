"""Alerts: a short message posted to a webhook (Slack-compatible JSON), never personal data."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

ALERT_TIMEOUT_SECONDS = 10


class AlertNotSent(Exception):
    """The webhook could not be reached or refused the message."""


def post_alert(url: str, text: str) -> None:
    """POSTs `{"text": text}` as JSON to `url` (AlertNotSent when that fails)."""
    request = urllib.request.Request(
        url, data=json.dumps({"text": text}).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=ALERT_TIMEOUT_SECONDS) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        # the error's text may quote the URL, which is a secret (it lets anyone post): its kind only
        raise AlertNotSent(f"the alert webhook did not take the message ({type(error).__name__})") from None
