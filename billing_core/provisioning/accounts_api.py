"""API methods: accounts and money (updateAccount, getAccountInfo, getAccounts, deleteAccount,
transferMoney).

Balances and accounts are never cached, so these methods invalidate nothing.
"""

from __future__ import annotations

from typing import Any

from billing_core.catalog.params import Amount, Bool, Int, Params, Str
from billing_core.catalog.registry import REGISTRY, Aliases, CallContext
from billing_core.ledger import transfers
from billing_core.ledger.context import LedgerContext
from billing_core.provisioning import account_lists, deletions
from billing_core.provisioning.users_api import caller_of


class UpdateAccountParams(Params):
    account: Int
    balance: Amount | None = None  # in the requesting user's currency
    overdraft: Amount | None = None  # in the requesting user's currency
    refill_allowed: Int | None = None
    billing_name: Str | None = None
    billing_address: Str | None = None
    billing_email: Str | None = None
    billing_bank_account: Str | None = None
    postpaid: Int | None = None


class GetAccountInfoParams(Params):
    account: Int


class GetAccountsParams(Params):
    all: Bool = False


class DeleteAccountParams(Params):
    account: Int


class TransferMoneyParams(Params):
    destination: Str  # a user name or an account number
    amount: Amount  # in the sender's currency
    comment: Str


@REGISTRY.method(
    "updateAccount",
    level=1, params=UpdateAccountParams, returns="bool",
    aliases=Aliases(vcs=("accounts.edit",), billmgr=("account.edit#update",), elid="account"),
)
async def update_account(ctx: CallContext[LedgerContext], p: UpdateAccountParams) -> bool:
    changes = {name: getattr(p, name) for name in p.model_fields_set if name != "account"}
    await transfers.update_account(
        ctx.services, ctx.generations, caller_of(ctx), ctx.require_actor(), p.account, changes
    )
    return True


@REGISTRY.method(
    "getAccountInfo",
    level=22, params=GetAccountInfoParams, returns="json",
    aliases=Aliases(vcs=("accounts.editForm",), billmgr=("account.edit#show",), elid="account"),
)
async def get_account_info(ctx: CallContext[LedgerContext], p: GetAccountInfoParams) -> dict[str, Any]:
    return await transfers.account_info(ctx.services, ctx.generations, caller_of(ctx), ctx.require_actor(), p.account)


@REGISTRY.method(
    "transferMoney",
    level=1, params=TransferMoneyParams, returns="bool",
    aliases=Aliases(vcs=("accounts.transfer",), billmgr=("transfer.edit#create",)),
)
async def transfer_money(ctx: CallContext[LedgerContext], p: TransferMoneyParams) -> bool:
    await transfers.transfer_money(
        ctx.services, ctx.generations, ctx.require_actor(), p.destination, p.amount, p.comment
    )
    return True


@REGISTRY.method("getAccounts", level=22, params=GetAccountsParams, returns="json")
async def get_accounts(ctx: CallContext[LedgerContext], p: GetAccountsParams) -> list[dict[str, Any]]:
    """Which accounts, with and without `all`: billing_core.provisioning.account_lists."""
    return await account_lists.list_accounts(ctx.services, ctx.generations, ctx.require_actor(), resellers=p.all)


@REGISTRY.method("deleteAccount", level=22, params=DeleteAccountParams, returns="bool")
async def delete_account(ctx: CallContext[LedgerContext], p: DeleteAccountParams) -> bool:
    """Soft, and only once no live user is on it (E_ACCOUNT_HAS_USERS); its money and
    transactions stay for the books."""
    await deletions.delete_account(ctx.services, caller_of(ctx), p.account)
    return True
