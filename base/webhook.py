"""Posting a JSON body to a webhook (Slack, Google Chat, any HTTP endpoint), with one-line errors (standard library only).

Used by the run summary step (``components/run_summary/logic.py``) and ``taxifare monitor``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from base import checks

WEBHOOK_TIMEOUT = 10.0


def check_webhook(url: str) -> None:
    """Refuse a webhook URL that cannot work ('' is fine: no webhook).

    Raises:
        InputError: naming the problem and the fix (a ValueError).
    """
    checks.webhook_url("notify_webhook", url)


def post_webhook(url: str, body: dict[str, Any], timeout: float = WEBHOOK_TIMEOUT) -> int:
    """POST ``body`` as JSON to ``url``; return the HTTP status.

    Raises:
        RuntimeError: one line naming the URL's host and what went wrong.
    """
    check_webhook(url)
    data = json.dumps(body, default=str).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json; charset=utf-8"})
    host = urllib.parse.urlsplit(url).netloc
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise RuntimeError(
            f"the notify_webhook at {host} answered HTTP {exc.code}: check the URL (a revoked hook answers 403/404)"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RuntimeError(f"cannot reach the notify_webhook at {host} ({reason}): check the URL and the network") from None
