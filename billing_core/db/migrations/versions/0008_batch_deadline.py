"""callgate_batch with a deadline kept inside PostgreSQL (PostgreSQL only)

Issue 9, item 8 ("phantom hold"): a decision's time-out ended callgate's wait, not the
statement; a hold waiting on a locked account row committed seconds after callPrepare had
answered `Declined E_SQL_ERROR`. Now the batch gets a budget in milliseconds and keeps it on
the database's own clock:
- each item first tries its account row with SKIP LOCKED (no wait, no subtransaction: the
  usual case costs what it did);
- a row another transaction holds is waited for with `lock_timeout` = what is left of the
  budget, but at most `p_wait_ms` (callgate's own transactions hold a row for milliseconds;
  a batch of several items passes a short wait, so that one account locked from outside
  does not spend the others' time), in a block that catches `lock_not_available`, so the
  wait ends the item only;
- an item whose turn comes after the budget is spent, or whose wait ran out, writes nothing
  and answers `timeout`. Items before it keep what they did: the statement still ends
  within the budget, so everything it commits is committed before callgate stops waiting.
billing_core.db.pg_batch sends a `timeout` item again, alone (so it may wait all its time
left), while its own decision has time left, else answers E_SQL_ERROR: what the database
did.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BATCH = """
CREATE OR REPLACE FUNCTION callgate_batch(p_items jsonb, p_budget_ms integer, p_wait_ms integer)
RETURNS TABLE (o_n integer, o_outcome text, o_available numeric, o_answer varchar,
               o_display_cost numeric, o_display_currency varchar, o_id integer,
               o_account_id integer, o_amount numeric, o_max_time_s integer,
               o_state varchar, o_rating text)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_deadline timestamptz := clock_timestamp() + p_budget_ms * interval '1 millisecond';
    v_left_ms bigint;
    v_account integer;
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    FOR v IN
        SELECT e.value AS x, e.ordinality::integer AS n
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS e
        ORDER BY (e.value->>'account_id')::integer, e.ordinality
    LOOP
        v_account := (v.x->>'account_id')::integer;
        v_left_ms := floor(extract(epoch FROM v_deadline - clock_timestamp()) * 1000)::bigint;
        IF v_left_ms > 0 THEN
            PERFORM 1 FROM accounts a WHERE a.id = v_account FOR UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
                -- Locked by another transaction (or no such account: the item's own function
                -- then raises as before). Wait in the row's queue, at most what is left.
                BEGIN
                    PERFORM set_config('lock_timeout', least(v_left_ms, p_wait_ms)::text, true);
                    PERFORM 1 FROM accounts a WHERE a.id = v_account FOR UPDATE;
                    PERFORM set_config('lock_timeout', v_lock_timeout, true);  -- the connection's again
                EXCEPTION WHEN lock_not_available THEN
                    v_left_ms := 0;
                END;
            END IF;
        END IF;
        IF v_left_ms <= 0 THEN
            RETURN QUERY SELECT v.n, 'timeout'::text, NULL::numeric, NULL::varchar, NULL::numeric,
                                NULL::varchar, NULL::integer, NULL::integer, NULL::numeric,
                                NULL::integer, NULL::varchar, NULL::text;
            CONTINUE;
        END IF;
        IF v.x->>'kind' = 'hold' THEN
            RETURN QUERY SELECT v.n, h.o_outcome, h.o_available, NULL::varchar, NULL::numeric,
                                NULL::varchar, h.o_id, h.o_account_id, h.o_amount, h.o_max_time_s,
                                h.o_state, h.o_rating
                FROM callgate_hold(
                    v.x->>'call_uid', (v.x->>'prior')::integer, v_account,
                    (v.x->>'user_id')::integer, (v.x->>'amount')::numeric,
                    (v.x->>'max_time_s')::integer, (v.x->>'now')::timestamptz,
                    (v.x->>'expires_at')::timestamptz, v.x->>'rating') AS h;
        ELSE
            RETURN QUERY SELECT v.n, f.o_outcome, NULL::numeric, f.o_answer, f.o_display_cost,
                                f.o_display_currency, f.o_id, f.o_account_id, f.o_amount,
                                f.o_max_time_s, f.o_state, f.o_rating
                FROM callgate_finish(
                    v.x->>'call_uid', (v.x->>'prior')::integer, (v.x->>'user_id')::integer,
                    v_account, v.x->>'sip_extension', v.x->>'callerid',
                    v.x->>'destination', (v.x->>'direction_id')::integer, v.x->>'direction',
                    (v.x->>'route_id')::integer, v.x->>'route', (v.x->>'length_s')::integer,
                    (v.x->>'answered_ms')::integer, (v.x->>'billed_s')::integer, v.x->>'status',
                    v.x->>'cause', (v.x->>'cost')::numeric, (v.x->>'display_cost')::numeric,
                    v.x->>'display_currency', v.x->>'is_did', v.x->>'answer',
                    (v.x->>'created_at')::timestamptz, v.x->>'ref', v.x->>'rating') AS f;
        END IF;
    END LOOP;
END
$$;
"""


def _batch_of_0005() -> str:
    path = Path(__file__).with_name("0005_ledger_batch.py")
    spec = importlib.util.spec_from_file_location("callgate_migration_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.BATCH)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(BATCH)
        op.execute("DROP FUNCTION IF EXISTS callgate_batch(jsonb)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS callgate_batch(jsonb, integer, integer)")
        op.execute(_batch_of_0005())
