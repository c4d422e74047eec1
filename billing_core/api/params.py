"""Argument types of the spec (string, ustring, num, bool) as pydantic types.

Every method's arguments are a `Params` subclass; the dispatcher validates the raw
wire strings into it once. A missing required field is E_MISSING_ARGUMENT, anything
else that does not parse is E_INVALID_ARGUMENT.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# `num` in the spec: a finite decimal (money, multipliers) or an integer (ids, seconds).
Num = Annotated[Decimal, Field(allow_inf_nan=False, max_digits=24)]
Int = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Str = Annotated[str, StringConstraints(max_length=1024)]
Bool = bool  # pydantic's lax mode takes "true"/"false"/"1"/"0" as the spec's bool


class Params(BaseModel):
    """Base of every method's arguments: unknown arguments are ignored, values immutable."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)


class NoParams(Params):
    pass


# Arguments every method may carry; they are consumed by authentication, not by handlers.
COMMON_ARGS = frozenset({"login", "password", "username"})
