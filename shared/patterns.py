"""Whole-string pattern checks for pydantic fields.

pydantic checks ``Field(pattern=...)`` with Rust's regex engine, where ``$`` is the end of the string; but a model
that needs a look-ahead has to use ``regex_engine="python-re"``, where pydantic searches with Python's ``re`` and
``$`` also matches before a trailing newline (``"org/name\\n"`` passed such a pattern and crash-looped
provisioning). :class:`WholeMatch` checks with :func:`re.fullmatch` whatever the engine, and documents the same
pattern in the JSON Schema (``pattern``). Plain ``re`` checks elsewhere use ``fullmatch`` for the same reason.

Standard library and pydantic only: the worker image copies this file (worker/Dockerfile).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema


@dataclass(frozen=True)
class WholeMatch:
    """``Annotated[str, WholeMatch(PATTERN)]``: the whole value must match ``PATTERN``.

    A mismatch is pydantic's own ``string_pattern_mismatch`` error, as ``Field(pattern=...)`` gives.
    """

    pattern: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        compiled = re.compile(self.pattern)

        def check(value: str) -> str:
            if compiled.fullmatch(value) is None:
                raise PydanticCustomError(
                    "string_pattern_mismatch", "String should match pattern '{pattern}'", {"pattern": self.pattern}
                )
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = self.pattern
        return json_schema
