"""One way to talk HTTP: a `requests` session with urllib3 retries, a descriptive User-Agent and timeouts."""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from tagger_eval import __version__

USER_AGENT = f"tagger-eval/{__version__} (image tagger evaluation; python-requests/{requests.__version__})"
RETRY_STATUSES = (429, 500, 502, 503, 504)


def make_session(
    retries: int = 3,
    backoff: float = 0.5,
    allowed_methods: frozenset[str] | None = None,
    read_retries: int | None = None,
) -> requests.Session:
    """A session that retries connection errors, 429 and 5xx with exponential backoff and honours Retry-After.

    POST is retried too by default: every call this project makes (tagging an image, reading an API) is idempotent.
    Callers still pass `timeout=` on every request; `requests` has no session-wide timeout.
    """
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries if read_retries is None else read_retries,
        status=retries,
        backoff_factor=backoff,
        backoff_jitter=backoff / 2,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=allowed_methods or frozenset({"GET", "HEAD", "POST"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session
