"""Which credentials a cloud command uses: looked up last, after every other check passed.

Application Default Credentials (``google.auth.default``) try a key file, gcloud's login and
then the GCE metadata server (169.254.169.254). A loopback ``--api-endpoint`` (an emulator or
a test server) never needs that probe: it gets the key file named by
``GOOGLE_APPLICATION_CREDENTIALS`` when there is one, else no credentials.
"""

from __future__ import annotations

import os
from typing import Any

from base.cloud_checks import is_loopback
from base.errors import InputError

_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
_CREDENTIALS_FIX = (
    "no Google Cloud credentials found: run `gcloud auth application-default login`, "
    "or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file"
)


def check_anonymous(anonymous: bool, api_endpoint: str | None, kfp_host: str | None) -> None:
    """``--anonymous`` is only for a local emulator or test server.

    Raises:
        InputError: when neither ``--api-endpoint`` nor ``--kfp-host`` is given.
    """
    if anonymous and not (api_endpoint or kfp_host):
        raise InputError("--anonymous is only for a local emulator or test server: pass --api-endpoint or --kfp-host too")


def default_credentials() -> Any:
    """Application Default Credentials, or one clear error when there are none.

    Raises:
        InputError: when ``google.auth.default()`` finds no credentials.
    """
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=_SCOPES)
    except DefaultCredentialsError as exc:
        reason = " ".join(str(exc).split())
        raise InputError(f"{_CREDENTIALS_FIX} ({reason})" if reason else _CREDENTIALS_FIX) from exc
    return credentials


def credentials_for(*, anonymous: bool, api_endpoint: str | None) -> Any:
    """The credentials of a Vertex AI call (call it after every other check).

    Args:
        anonymous: send none (``--anonymous``).
        api_endpoint: the endpoint the call goes to; a loopback one skips the metadata-server probe.

    Raises:
        InputError: when no credentials are found, or the key file cannot be read.
    """
    from google.auth.credentials import AnonymousCredentials

    if anonymous:
        return AnonymousCredentials()
    if not is_loopback(api_endpoint):
        return default_credentials()
    key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if not key_file:
        return AnonymousCredentials()
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.load_credentials_from_file(key_file, scopes=_SCOPES)
    except DefaultCredentialsError as exc:
        raise InputError(f"GOOGLE_APPLICATION_CREDENTIALS {key_file!r} is not a readable key file: fix or unset it") from exc
    return credentials
