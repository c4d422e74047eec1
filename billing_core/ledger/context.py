"""The ledger's part of the process context: the call ledger (holds and charges of the
call path, on the store's fastest path). With it, the whole context the layers above use."""

from __future__ import annotations

from typing import Protocol

from billing_core.ledger.call_ledger import CallLedger
from billing_core.rating.context import RatingContext


class LedgerContext(RatingContext, Protocol):
    call_ledger: CallLedger
