"""The spec's E_* error codes, raised as one exception type.

Every failure a caller can see is an `ApiError` carrying a code from
Narayana Billing API 2.2 (`../shared/spec/narayana-2.2.json`, `error_codes`): all 40 of
the list, in its order, with its descriptions. Codes of methods callgate does not have yet
(SMS, payments, TTS, Asterisk requests, …) are listed so that every code a
client may see is known; docs/decisions.md says which method raises which.
Transports map it to their wire form once (HTTP status, AGI variables).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # Query initialization errors
    E_INCORRECT_API_VERSION = "E_INCORRECT_API_VERSION"
    E_UNKNOWN_METHOD = "E_UNKNOWN_METHOD"
    E_UNDEFINED_INSTRUCTION = "E_UNDEFINED_INSTRUCTION"
    E_INSUFFICIENT_ACCESS = "E_INSUFFICIENT_ACCESS"
    E_MISSING_ARGUMENT = "E_MISSING_ARGUMENT"
    E_INVALID_ARGUMENT = "E_INVALID_ARGUMENT"
    E_LUA_EXCEPTION = "E_LUA_EXCEPTION"
    E_AUTH_FAILED = "E_AUTH_FAILED"
    E_HAS_NO_ONE_TOLD_YOU_SHE_IS_NOT_BREATHING = "E_HAS_NO_ONE_TOLD_YOU_SHE_IS_NOT_BREATHING"
    # Query execution errors
    E_USER_LOCKED = "E_USER_LOCKED"
    E_SQL_ERROR = "E_SQL_ERROR"
    E_NOT_EXIST = "E_NOT_EXIST"
    E_DOES_NOT_BELONG_TO_YOU = "E_DOES_NOT_BELONG_TO_YOU"
    E_DATA_ABORT = "E_DATA_ABORT"
    E_ASTERISK_QUERY_ERROR = "E_ASTERISK_QUERY_ERROR"
    E_SIP_SERVER_NOT_EXIST = "E_SIP_SERVER_NOT_EXIST"
    E_WRONG_EXTENSION = "E_WRONG_EXTENSION"
    E_TRANSACTIONS_LIMITED = "E_TRANSACTIONS_LIMITED"
    E_TRANSACTIONS_LOCKED = "E_TRANSACTIONS_LOCKED"
    E_ACCOUNT_HAS_USERS = "E_ACCOUNT_HAS_USERS"
    E_CANT_CREATE_ASTERISK_ACCOUNT = "E_CANT_CREATE_ASTERISK_ACCOUNT"
    E_CARRIER_ERROR = "E_CARRIER_ERROR"
    E_DID_ORDER_FAIL = "E_DID_ORDER_FAIL"
    E_INITIATE_ASTERISK_CALL_FAIL = "E_INITIATE_ASTERISK_CALL_FAIL"
    E_INSUFFICIENT_MONEY = "E_INSUFFICIENT_MONEY"
    E_INVALID_SMS_FROM = "E_INVALID_SMS_FROM"
    E_INVALID_SMS_TO = "E_INVALID_SMS_TO"
    E_CODE_HAS_NO_BALANCE = "E_CODE_HAS_NO_BALANCE"
    E_INVITE_LIMIT_REACHED = "E_INVITE_LIMIT_REACHED"
    E_MAXIMUM_PAYMENT = "E_MAXIMUM_PAYMENT"
    E_MINIMAL_PAYMENT = "E_MINIMAL_PAYMENT"
    E_MINIMAL_START_PAYMENT = "E_MINIMAL_START_PAYMENT"
    E_TARGET_WHITELISTED = "E_TARGET_WHITELISTED"
    E_TRANSACTION_FAILED = "E_TRANSACTION_FAILED"
    E_TTS_ERROR = "E_TTS_ERROR"
    E_UNROUTABLE = "E_UNROUTABLE"
    E_CANT_CREATE_ASTERISK_EXTENSION = "E_CANT_CREATE_ASTERISK_EXTENSION"
    E_CANT_DELETE_EXTENSION = "E_CANT_DELETE_EXTENSION"
    E_ALREADY_ON_THIS_TARIFF = "E_ALREADY_ON_THIS_TARIFF"
    E_CONTACT_RESELLER = "E_CONTACT_RESELLER"


DESCRIPTIONS: dict[ErrorCode, str] = {
    ErrorCode.E_INCORRECT_API_VERSION: "The version of the server and the client don't match",
    ErrorCode.E_UNKNOWN_METHOD: "Unknown method",
    ErrorCode.E_UNDEFINED_INSTRUCTION: "Method can't be executed",
    ErrorCode.E_INSUFFICIENT_ACCESS: "Insufficient rights for this method execution",
    ErrorCode.E_MISSING_ARGUMENT: "Obligated argument missing",
    ErrorCode.E_INVALID_ARGUMENT: "Invalid argument type",
    ErrorCode.E_LUA_EXCEPTION: "Critical method execution error",
    ErrorCode.E_AUTH_FAILED: "Incorrect user parameter and/or password",
    ErrorCode.E_HAS_NO_ONE_TOLD_YOU_SHE_IS_NOT_BREATHING: (
        "Entering the endless loop. You shouldn't ever see this error."
    ),
    ErrorCode.E_USER_LOCKED: "Users is locked",
    ErrorCode.E_SQL_ERROR: "SQL-query error",
    ErrorCode.E_NOT_EXIST: "Requested item doesn't exist in this context",
    ErrorCode.E_DOES_NOT_BELONG_TO_YOU: "Requested item doesn't belong to you",
    ErrorCode.E_DATA_ABORT: "Incorrect input",
    ErrorCode.E_ASTERISK_QUERY_ERROR: "Asterisk query execution error",
    ErrorCode.E_SIP_SERVER_NOT_EXIST: "SIP-server doesn't exist",
    ErrorCode.E_WRONG_EXTENSION: "Invalid SIP login",
    ErrorCode.E_TRANSACTIONS_LIMITED: "Financial transactions are limited",
    ErrorCode.E_TRANSACTIONS_LOCKED: "Financial transactions are locked",
    ErrorCode.E_ACCOUNT_HAS_USERS: "Unable to delete non-empty account",
    ErrorCode.E_CANT_CREATE_ASTERISK_ACCOUNT: "Unable to create account",
    ErrorCode.E_CARRIER_ERROR: "SMS sending error: channel returns error",
    ErrorCode.E_DID_ORDER_FAIL: "DID-number order error",
    ErrorCode.E_INITIATE_ASTERISK_CALL_FAIL: "Call initiation error",
    ErrorCode.E_INSUFFICIENT_MONEY: "Insufficient money",
    ErrorCode.E_INVALID_SMS_FROM: 'Incorrect "From" parameter',
    ErrorCode.E_INVALID_SMS_TO: 'Incorrect "To" parameter',
    ErrorCode.E_CODE_HAS_NO_BALANCE: "No money on this prepayed code",
    ErrorCode.E_INVITE_LIMIT_REACHED: "Invitation limit is reached",
    ErrorCode.E_MAXIMUM_PAYMENT: "Maximum payment sum exceeded",
    ErrorCode.E_MINIMAL_PAYMENT: "Payment sum is less than minimal",
    ErrorCode.E_MINIMAL_START_PAYMENT: "Start payment sum is less than minimal",
    ErrorCode.E_TARGET_WHITELISTED: "IP address is whitelisted",
    ErrorCode.E_TRANSACTION_FAILED: "Finance transaction error",
    ErrorCode.E_TTS_ERROR: "Text-to-Speech method error",
    ErrorCode.E_UNROUTABLE: "Direction is not serviced",
    ErrorCode.E_CANT_CREATE_ASTERISK_EXTENSION: "Unable to create SIP account",
    ErrorCode.E_CANT_DELETE_EXTENSION: "Unable to delete SIP account",
    ErrorCode.E_ALREADY_ON_THIS_TARIFF: "You are already serviced on this tariff",
    ErrorCode.E_CONTACT_RESELLER: (
        "This operation is unavailable for reseller users. Please, contact your service provider."
    ),
}


class ApiError(Exception):
    """A failure with the spec's code; `detail` is a human explanation (never a secret)."""

    def __init__(self, code: ErrorCode, detail: str | None = None) -> None:
        self.code = code
        self.detail = detail or DESCRIPTIONS.get(code, code.value)
        super().__init__(f"{code.value}: {self.detail}")


class KeyRejected(ApiError):
    """The API key is unknown or disabled (HTTP 401; the source IP gets banned)."""

    def __init__(self, detail: str = "the key is incorrect") -> None:
        super().__init__(ErrorCode.E_AUTH_FAILED, detail)


class SourceForbidden(ApiError):
    """The source IP is banned or not allowed for this key (HTTP 403)."""

    def __init__(self, detail: str = "access from this IP denied") -> None:
        super().__init__(ErrorCode.E_AUTH_FAILED, detail)


class BackendUnavailable(ApiError):
    """PostgreSQL/SQLite could not be reached or timed out."""

    def __init__(self, detail: str = "database unavailable") -> None:
        super().__init__(ErrorCode.E_SQL_ERROR, detail)


class UnexpectedFailure(ApiError):
    """Not a verdict on the request: a bug, or a state of the store nothing maps yet (it is
    E_LUA_EXCEPTION on the wire). A valid callFinish that meets one is spooled, not lost."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(ErrorCode.E_LUA_EXCEPTION, detail)  # the spec's description by default
