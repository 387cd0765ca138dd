"""What every ``visgate`` command shares: the state on the click context (the options of the group and the client,
built on first use), the two consoles (results on stdout, progress and errors on stderr), the exit statuses, and the
one-line error a failure prints."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import NoReturn

import requests
from rich.console import Console
from rich.text import Text

from visgate_client.client import Client
from visgate_client.deployment import Deployment
from visgate_client.errors import ApiError

EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
PAGE_SIZE = 100  # the API's largest page: the fewest calls for a whole listing

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@dataclass
class State:
    """The group's options, on the click context of every command; the client is built on first use."""

    api_url: str | None
    api_key: str | None
    verbose: bool
    _client: Client | None = field(default=None, repr=False)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.api_url, self.api_key)
        return self._client

    def deployment(self, deployment_id: str) -> Deployment:
        """A deployment known by its id alone (no read): for the commands that act on it."""
        return Deployment(self.client.transport, {"deployment_id": deployment_id})


def fail(exc: BaseException, verbose: bool) -> NoReturn:
    """Print ``exc`` as one line on stderr (with ``verbose``, its details and traceback) and exit 1."""
    err.print(Text.assemble(("error: ", "bold red"), one_line(exc)), highlight=False)
    if verbose:
        if isinstance(exc, ApiError) and exc.details is not None:
            err.print_json(data=exc.details)
        err.print("".join(traceback.format_exception(exc)), markup=False, highlight=False)
    raise SystemExit(EXIT_FAILURE)


def one_line(exc: BaseException) -> str:
    """``exc`` as one line: the API's error code and request id, or the connection error."""
    if isinstance(exc, requests.RequestException):
        return f"connection_error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return str(exc).replace("\n", " ")
