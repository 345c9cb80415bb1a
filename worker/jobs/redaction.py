"""Keeping secrets out of what a job worker says: error messages go to the submitter (result, final event) and
into dead-letter headers, so credentials in URLs and the values of secret-looking environment variables are
masked there.

A job's own values cannot reach the environment (``worker.jobs.grammar`` refuses ``${oc.env:...}``); this is
the second line, for text a job's process or a library produced.

>>> redact("cannot reach amqp://maze:hunter2@broker:5672/%2F", environ={})
'cannot reach amqp://maze:****@broker:5672/%2F'
>>> redact("token abc123456 refused", environ={"API_TOKEN": "abc123456"})
'token **** refused'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

MASK = "****"
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSW|PASSPHRASE|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|AUTH|"
                         r"(?:^|_)KEY$|(?:^|_)URL$|(?:^|_)DSN$", re.IGNORECASE)
"""Environment variables whose values are masked wherever they appear (``MAZE_AMQP_URL`` among them)."""
MIN_SECRET_LENGTH = 4
"""Shorter values are left alone: masking ``1`` or ``on`` everywhere would garble every message."""
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@]*):[^/\s@]+@")


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with URL passwords and the values of secret-looking environment variables masked."""
    environ = os.environ if environ is None else environ
    secrets = sorted((value for name, value in environ.items()
                      if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LENGTH), key=len, reverse=True)
    for value in secrets:
        text = text.replace(value, MASK)
    return _URL_CREDENTIALS.sub(rf"\g<scheme>\g<user>:{MASK}@", text)
