"""callgate_batch: many holds and finishes in one statement (PostgreSQL only)

One call of `callgate_batch(items jsonb)` runs each item through callgate_hold or
callgate_finish, in one transaction, and returns each item's row tagged with its position.
The items are taken in account order, so that two batches running at once (two workers)
lock accounts in the same order and cannot deadlock; items of one account keep their
order. billing_core.db.pg_batch sends what arrived while the previous batch was in flight:
one round trip, one wake-up of the backend and one commit for all of them (measured in
docs/decisions.md, "Batched ledger statements").

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BATCH = """
CREATE OR REPLACE FUNCTION callgate_batch(p_items jsonb)
RETURNS TABLE (o_n integer, o_outcome text, o_available numeric, o_answer varchar,
               o_display_cost numeric, o_display_currency varchar, o_id integer,
               o_account_id integer, o_amount numeric, o_max_time_s integer,
               o_state varchar, o_rating text)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
BEGIN
    FOR v IN
        SELECT e.value AS x, e.ordinality::integer AS n
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS e
        ORDER BY (e.value->>'account_id')::integer, e.ordinality
    LOOP
        IF v.x->>'kind' = 'hold' THEN
            RETURN QUERY SELECT v.n, h.o_outcome, h.o_available, NULL::varchar, NULL::numeric,
                                NULL::varchar, h.o_id, h.o_account_id, h.o_amount, h.o_max_time_s,
                                h.o_state, h.o_rating
                FROM callgate_hold(
                    v.x->>'call_uid', (v.x->>'prior')::integer, (v.x->>'account_id')::integer,
                    (v.x->>'user_id')::integer, (v.x->>'amount')::numeric,
                    (v.x->>'max_time_s')::integer, (v.x->>'now')::timestamptz,
                    (v.x->>'expires_at')::timestamptz, v.x->>'rating') AS h;
        ELSE
            RETURN QUERY SELECT v.n, f.o_outcome, NULL::numeric, f.o_answer, f.o_display_cost,
                                f.o_display_currency, f.o_id, f.o_account_id, f.o_amount,
                                f.o_max_time_s, f.o_state, f.o_rating
                FROM callgate_finish(
                    v.x->>'call_uid', (v.x->>'prior')::integer, (v.x->>'user_id')::integer,
                    (v.x->>'account_id')::integer, v.x->>'sip_extension', v.x->>'callerid',
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


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(BATCH)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS callgate_batch")
