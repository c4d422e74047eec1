"""call ledger functions (PostgreSQL only)

callPrepare's hold and callFinish's charge as one PL/pgSQL call each, so a decision costs
one database round trip (billing_core.ledger.pg_call_ledger). SQLite runs the same primitives
through SQLAlchemy (billing_core.ledger.call_ledger.SqlCallLedger) and gets nothing here.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Hold p_amount for (p_call_uid, p_prior) if the account can afford it. The row lock on the
# account serializes every money decision of that account, so the sum read here is exact.
HOLD = """
CREATE OR REPLACE FUNCTION callgate_hold(
    p_call_uid varchar, p_prior integer, p_account_id integer, p_user_id integer,
    p_amount numeric, p_max_time_s integer, p_now timestamptz, p_expires_at timestamptz, p_rating text)
RETURNS TABLE (o_outcome text, o_available numeric, o_id integer, o_account_id integer,
               o_amount numeric, o_max_time_s integer, o_state varchar, o_rating text)
LANGUAGE plpgsql AS $$
DECLARE
    v_limit numeric;
    v_held numeric;
    v_id integer;
BEGIN
    SELECT a.balance + a.overdraft INTO v_limit FROM accounts a WHERE a.id = p_account_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no such account' USING ERRCODE = 'no_data_found';
    END IF;
    RETURN QUERY
        SELECT 'exists'::text, NULL::numeric, r.id, r.account_id, r.amount, r.max_time_s, r.state, r.rating
        FROM reservations r WHERE r.call_uid = p_call_uid AND r.prior = p_prior;
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT coalesce(sum(r.amount), 0) INTO v_held FROM reservations r
        WHERE r.account_id = p_account_id AND r.state = 'open' AND r.expires_at > p_now;
    IF v_limit - v_held < p_amount THEN
        RETURN QUERY SELECT 'short'::text, v_limit - v_held, NULL::integer, NULL::integer,
                            NULL::numeric, NULL::integer, NULL::varchar, NULL::text;
        RETURN;
    END IF;
    INSERT INTO reservations (call_uid, prior, account_id, user_id, amount, max_time_s, state,
                              created_at, expires_at, rating)
        VALUES (p_call_uid, p_prior, p_account_id, p_user_id, p_amount, p_max_time_s, 'open',
                p_now, p_expires_at, p_rating)
        RETURNING id INTO v_id;
    RETURN QUERY SELECT 'held'::text, v_limit - v_held - p_amount, v_id, NULL::integer,
                        NULL::numeric, NULL::integer, NULL::varchar, NULL::text;
END
$$;
"""

# Write one call attempt: the CDR (once per call_uid and prior: a duplicate returns the
# stored answer and writes nothing), the debit and its transaction row, the settled hold.
CHARGE = """
CREATE OR REPLACE FUNCTION callgate_charge(
    p_call_uid varchar, p_prior integer, p_user_id integer, p_account_id integer,
    p_sip_extension varchar, p_callerid varchar, p_destination varchar,
    p_direction_id integer, p_direction varchar, p_route_id integer, p_route varchar,
    p_length_s integer, p_answered_ms integer, p_billed_s integer, p_status varchar,
    p_cause varchar, p_cost numeric, p_display_cost numeric, p_display_currency varchar,
    p_is_did varchar, p_answer varchar, p_created_at timestamptz,
    p_reservation_id integer, p_ref varchar)
RETURNS TABLE (o_written boolean, o_answer varchar, o_display_cost numeric, o_display_currency varchar)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cdrs (call_uid, prior, user_id, account_id, sip_extension, callerid, destination,
                      direction_id, direction, route_id, route, length_s, answered_ms, billed_s,
                      status, cause, cost, display_cost, display_currency, is_did, answer, created_at)
        VALUES (p_call_uid, p_prior, p_user_id, p_account_id, p_sip_extension, p_callerid,
                p_destination, p_direction_id, p_direction, p_route_id, p_route, p_length_s,
                p_answered_ms, p_billed_s, p_status, p_cause, p_cost, p_display_cost,
                p_display_currency, p_is_did, p_answer, p_created_at)
        ON CONFLICT ON CONSTRAINT uq_cdrs_call DO NOTHING;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, c.answer, c.display_cost, c.display_currency
            FROM cdrs c WHERE c.call_uid = p_call_uid AND c.prior = p_prior;
        RETURN;
    END IF;
    IF p_cost > 0 THEN
        UPDATE accounts SET balance = balance - p_cost WHERE id = p_account_id;
        INSERT INTO transactions (account_id, amount, kind, ref, comment, created_at)
            VALUES (p_account_id, -p_cost, 'call', p_ref, '', p_created_at);
    END IF;
    IF p_reservation_id IS NOT NULL THEN
        UPDATE reservations SET state = 'settled' WHERE id = p_reservation_id;
    END IF;
    RETURN QUERY SELECT true, p_answer, p_display_cost, p_display_currency;
END
$$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(HOLD)
    op.execute(CHARGE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION IF EXISTS callgate_charge")
    op.execute("DROP FUNCTION IF EXISTS callgate_hold")
