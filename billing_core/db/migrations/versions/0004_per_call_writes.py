"""holds end with their charge; no foreign keys on the per-call tables

Measured with pgbench on the two ledger functions (docs/decisions.md, "Per-call writes"):
- every insert into reservations, cdrs and transactions ran a foreign-key trigger that
  locks the referenced users/accounts row FOR KEY SHARE: a row lock, a dirtied page and a
  WAL record per key, per call; the ids come from profiles the registry resolved, the
  account row is locked by the same function, and users and accounts are never deleted
  (a removed user is status -1), so the constraints guarded nothing the code can break;
- settling a hold was an UPDATE of an indexed column (state), so it inserted into all four
  indexes of the table. A charged hold is now deleted in the transaction that writes its
  CDR and debit: `reservations` holds only open and expired holds (the money trail is
  `transactions` and `cdrs`).
- callgate_finish: callFinish in one round trip on any worker (the caller prices the call
  at the rating it would hold at now; a hold priced otherwise is handed back instead).
- callgate_hold answers `finished` for a call whose CDR exists: its hold is gone, so
  without that a callPrepare replayed after its callFinish would hold money again.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FOREIGN_KEYS = {
    "reservations": ("fk_reservations_account_id_accounts", "fk_reservations_user_id_users"),
    "cdrs": ("fk_cdrs_account_id_accounts", "fk_cdrs_user_id_users"),
    "transactions": ("fk_transactions_account_id_accounts",),
}
REFERENCED = {
    "fk_reservations_account_id_accounts": ("account_id", "accounts"),
    "fk_reservations_user_id_users": ("user_id", "users"),
    "fk_cdrs_account_id_accounts": ("account_id", "accounts"),
    "fk_cdrs_user_id_users": ("user_id", "users"),
    "fk_transactions_account_id_accounts": ("account_id", "accounts"),
}

def _functions_of_0002() -> tuple[str, str]:
    """HOLD and CHARGE exactly as migration 0002 installed them."""
    path = Path(__file__).with_name("0002_call_ledger_functions.py")
    spec = importlib.util.spec_from_file_location("callgate_migration_0002", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HOLD, module.CHARGE


def _edited(function: str, old: str, new: str) -> str:
    assert function.count(old) == 1, old  # 0002 is frozen: the edit applies exactly once
    return function.replace(old, new)


_HOLD_0002, _CHARGE_0002 = _functions_of_0002()

# 0002's hold, answering `finished` for a call whose CDR exists (its hold ended with it).
HOLD = _edited(
    _HOLD_0002,
    """    SELECT coalesce(sum(r.amount), 0) INTO v_held""",
    """    -- Charged already (its hold is gone with the charge): the attempt is over.
    PERFORM 1 FROM cdrs c WHERE c.call_uid = p_call_uid AND c.prior = p_prior;
    IF FOUND THEN
        RETURN QUERY SELECT 'finished'::text, NULL::numeric, NULL::integer, NULL::integer,
                            NULL::numeric, NULL::integer, NULL::varchar, NULL::text;
        RETURN;
    END IF;
    SELECT coalesce(sum(r.amount), 0) INTO v_held""",
)

# 0002's charge, deleting the hold instead of marking it settled.
CHARGE = _edited(
    _CHARGE_0002,
    "UPDATE reservations SET state = 'settled' WHERE id = p_reservation_id;",
    "DELETE FROM reservations WHERE id = p_reservation_id;",
)

# callFinish in one round trip from any worker: charge (through callgate_charge) at the
# caller's price if the call's hold (if any) was priced at the same rating (its stored
# text), for this account, for at least the billed seconds; otherwise hand the hold back to
# be priced at (`reprice`).
FINISH = """
CREATE OR REPLACE FUNCTION callgate_finish(
    p_call_uid varchar, p_prior integer, p_user_id integer, p_account_id integer,
    p_sip_extension varchar, p_callerid varchar, p_destination varchar,
    p_direction_id integer, p_direction varchar, p_route_id integer, p_route varchar,
    p_length_s integer, p_answered_ms integer, p_billed_s integer, p_status varchar,
    p_cause varchar, p_cost numeric, p_display_cost numeric, p_display_currency varchar,
    p_is_did varchar, p_answer varchar, p_created_at timestamptz, p_ref varchar, p_rating text)
RETURNS TABLE (o_outcome text, o_answer varchar, o_display_cost numeric, o_display_currency varchar,
               o_id integer, o_account_id integer, o_amount numeric, o_max_time_s integer,
               o_state varchar, o_rating text)
LANGUAGE plpgsql AS $$
DECLARE
    v_hold reservations%ROWTYPE;
BEGIN
    -- The account row first, as callgate_hold does: every ledger step of an account then
    -- queues on that one lock, so steps taken in account order (callgate_batch) cannot
    -- deadlock on anything they write afterwards (a CDR, a hold).
    PERFORM 1 FROM accounts a WHERE a.id = p_account_id FOR UPDATE;
    SELECT * INTO v_hold FROM reservations r WHERE r.call_uid = p_call_uid AND r.prior = p_prior;
    IF FOUND AND (v_hold.account_id <> p_account_id OR v_hold.rating IS DISTINCT FROM p_rating
                  OR p_billed_s > v_hold.max_time_s) THEN
        RETURN QUERY SELECT 'reprice'::text, NULL::varchar, NULL::numeric, NULL::varchar,
                            v_hold.id, v_hold.account_id, v_hold.amount, v_hold.max_time_s,
                            v_hold.state, v_hold.rating;
        RETURN;
    END IF;
    RETURN QUERY SELECT CASE WHEN c.o_written THEN 'written' ELSE 'stored' END::text,
                        c.o_answer, c.o_display_cost, c.o_display_currency,
                        NULL::integer, NULL::integer, NULL::numeric, NULL::integer,
                        NULL::varchar, NULL::text
        FROM callgate_charge(
            p_call_uid, p_prior, p_user_id, p_account_id, p_sip_extension, p_callerid,
            p_destination, p_direction_id, p_direction, p_route_id, p_route, p_length_s,
            p_answered_ms, p_billed_s, p_status, p_cause, p_cost, p_display_cost,
            p_display_currency, p_is_did, p_answer, p_created_at, v_hold.id, p_ref) AS c;
END
$$;
"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, names in FOREIGN_KEYS.items():
        with op.batch_alter_table(table) as batch:
            for name in names:
                batch.drop_constraint(name, type_="foreignkey")
    op.execute("DELETE FROM reservations WHERE state = 'settled'")
    if postgres:
        op.execute(HOLD)
        op.execute(CHARGE)
        op.execute(FINISH)


def downgrade() -> None:
    for table, names in FOREIGN_KEYS.items():
        with op.batch_alter_table(table) as batch:
            for name in names:
                column, referred = REFERENCED[name]
                batch.create_foreign_key(name, referred, [column], ["id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS callgate_finish")
        op.execute(_HOLD_0002)
        op.execute(_CHARGE_0002)
    # The holds deleted with their charge do not come back: their CDRs and transactions
    # carry the same money.
