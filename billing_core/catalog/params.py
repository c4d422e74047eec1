"""Argument types of the spec (string, ustring, num, bool) as pydantic types.

Every method's arguments are a `Params` subclass; the dispatcher validates the raw
wire strings into it once. A missing required field is E_MISSING_ARGUMENT, anything
else that does not parse is E_INVALID_ARGUMENT.
"""

from __future__ import annotations

import types
from decimal import Decimal
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator
from pydantic.fields import FieldInfo

from billing_core.money import parse_amount, parse_number

# `num` in the spec: a finite decimal (multipliers, time zones) or an integer (ids, seconds).
# ASCII digits only: Decimal() alone would take Arabic-Indic and other scripts' digits.
Num = Annotated[Decimal, BeforeValidator(parse_number), Field(allow_inf_nan=False, max_digits=24)]
# A `num` that is money: the one parser of amounts (billing_core.money.parse_amount) — at
# most 4 decimals and 14 integer digits, refused (E_INVALID_ARGUMENT), never rounded.
Amount = Annotated[Decimal, BeforeValidator(parse_amount)]
Int = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Str = Annotated[str, StringConstraints(max_length=1024)]
Bool = bool  # pydantic's lax mode takes "true"/"false"/"1"/"0" as the spec's bool


def _accepts_text(field: FieldInfo | None) -> bool:
    """True when the field takes free text (str, or str | None)."""
    if field is None:
        return True
    annotation = field.annotation
    if annotation is str:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_str(arg) for arg in get_args(annotation))
    return False


def _is_str(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation is str


class Params(BaseModel):
    """Base of every method's arguments: unknown arguments are ignored, values immutable.

    An empty value for a non-text argument counts as absent (its default applies, or
    E_MISSING_ARGUMENT when it is required): dialplans expand unset variables to empty
    strings (`answered_ms=&cause=`), and that must not read as a malformed number.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_absent(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {k: v for k, v in data.items() if not (v == "" and not _accepts_text(fields.get(k)))}


class NoParams(Params):
    pass


# Arguments every method may carry; they are consumed by authentication, not by handlers.
COMMON_ARGS = frozenset({"login", "password", "username"})
