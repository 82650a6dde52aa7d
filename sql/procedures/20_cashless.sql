-- Cashless festival: cards, bar orders and refunds, Stripe and checkpoint recharges, cash drawers, the NFC
-- scan log and the close-out. These procedures never change a balance themselves: every movement is one
-- pgwallet.post_legs call. Lock order: the domain row (card, order, checkpoint), then ledger accounts by
-- ascending id, then collector slots (bar revenue and clearing accounts are collectors: no hot row).

-- cashless_account: the festival's own account for p_purpose in p_currency, opened on first use.
-- Locks: an advisory lock on (currency, purpose) only when it must open it. Raises: nothing.
create or replace function pgwallet.cashless_account(p_currency text, p_purpose text)
returns bigint
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_id bigint;
begin
    select account_id into v_id from pgwallet.cashless_accounts where currency = p_currency and purpose = p_purpose;
    if found then
        return v_id;
    end if;
    perform pg_catalog.pg_advisory_xact_lock(1885828980, pg_catalog.hashtext('cashless/' || p_currency || '/' || p_purpose));
    select account_id into v_id from pgwallet.cashless_accounts where currency = p_currency and purpose = p_purpose;
    if found then
        return v_id;
    end if;
    v_id := (pgwallet.create_account(p_currency, case when p_purpose = 'fees' then 'fees' else 'clearing' end,
                                   'cashless ' || p_purpose || ' ' || p_currency,
                                   p_purpose <> 'fees', true) ->> 'id')::bigint;
    insert into pgwallet.cashless_accounts (currency, purpose, account_id) values (p_currency, p_purpose, v_id);
    return v_id;
end
$$;

-- card_json: the public view of a card, with its balance. Locks nothing.
create or replace function pgwallet.card_json(p_card pgwallet.cards)
returns jsonb
language sql
stable
set search_path = pgwallet, pg_temp
as $$
    select jsonb_build_object(
        'card_id', p_card.id, 'uid', p_card.uid, 'account_id', p_card.account_id, 'currency', p_card.currency,
        'exponent', (select exponent from pgwallet.currencies where code = p_card.currency),
        'holder', p_card.holder, 'status', p_card.status, 'status_reason', p_card.status_reason,
        'payout_method', p_card.payout_method, 'replaced_by', p_card.replaced_by,
        'balance', a.balance, 'available', a.balance - a.held,
        'created_at', p_card.created_at, 'updated_at', p_card.updated_at)
    from pgwallet.accounts a where a.id = p_card.account_id
$$;

-- lock_card: the card p_card_id, locked FOR UPDATE, then its ledger account row (process_bar_order locks only
-- that account row, so whatever changes a card waits for orders in flight and they see its new status).
-- Raises: CARD_NOT_FOUND.
create or replace function pgwallet.lock_card(p_card_id bigint, p_field text default 'card_id')
returns pgwallet.cards
language plpgsql
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_card pgwallet.cards;
begin
    select * into v_card from pgwallet.cards where id = p_card_id for update;
    if not found then
        perform pgwallet.raise_error('CARD_NOT_FOUND', pg_catalog.format('card %s', p_card_id), p_field);
    end if;
    perform 1 from pgwallet.accounts where id = v_card.account_id for update;
    return v_card;
end
$$;

-- issue_card: a new card (NFC uid, optional holder) with its own ledger account of kind 'card'.
-- Locks nothing. Raises: INVALID_REQUEST, CARD_UID_TAKEN.
create or replace function pgwallet.issue_card(p_uid text, p_currency text default 'EUR', p_holder text default null,
                                               p_payout_method text default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_account bigint;
    v_card    pgwallet.cards;
begin
    p_currency := coalesce(p_currency, 'EUR');
    perform pgwallet.check_request(p_uid ~ '^[0-9A-Za-z:_-]{1,64}$', 'uid',
                                   'must be 1 to 64 letters, digits, colons, dashes or underscores');
    perform pgwallet.check_request(exists (select 1 from pgwallet.currencies where code = p_currency),
                                   'currency', 'must be a known currency code');
    perform pgwallet.check_request(p_holder is null or length(p_holder) between 1 and 200, 'holder',
                                   'must be 1 to 200 characters');
    perform pgwallet.check_request(p_payout_method is null
                                   or p_payout_method in ('bank_transfer', 'stripe_refund', 'cash'),
                                   'payout_method', 'must be bank_transfer, stripe_refund or cash');
    perform pg_catalog.pg_advisory_xact_lock(1885828980, pg_catalog.hashtext('card/' || p_uid));
    if exists (select 1 from pgwallet.cards where uid = p_uid) then
        perform pgwallet.raise_error('CARD_UID_TAKEN', pg_catalog.format('uid %s', p_uid), 'uid');
    end if;
    v_account := (pgwallet.create_account(p_currency, 'card', p_holder, false, false,
                                        jsonb_build_object('nfc_uid', p_uid)) ->> 'id')::bigint;
    insert into pgwallet.cards (uid, account_id, currency, holder, payout_method)
    values (p_uid, v_account, p_currency, p_holder, coalesce(p_payout_method, 'bank_transfer'))
    returning * into v_card;
    return pgwallet.card_json(v_card);
end
$$;

-- get_card: one card with its balance. Locks nothing. Raises: CARD_NOT_FOUND.
create or replace function pgwallet.get_card(p_card_id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_card pgwallet.cards;
begin
    select * into v_card from pgwallet.cards where id = p_card_id;
    if not found then
        perform pgwallet.raise_error('CARD_NOT_FOUND', pg_catalog.format('card %s', p_card_id), 'card_id');
    end if;
    return pgwallet.card_json(v_card);
end
$$;

-- lookup_card: the card with NFC uid p_uid, and one row in the scan log (found, unknown or blocked, with
-- location and device). An unknown uid is logged and answered {"status": "unknown"} rather than raised,
-- so that the log row stays (the Python wrappers raise CARD_NOT_FOUND for it). Locks nothing.
-- Raises: INVALID_REQUEST.
create or replace function pgwallet.lookup_card(p_uid text, p_location text default null, p_device text default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_card pgwallet.cards;
begin
    perform pgwallet.check_request(length(p_uid) between 1 and 64, 'uid', 'must be 1 to 64 characters');
    perform pgwallet.check_request(p_location is null or length(p_location) between 1 and 200, 'location',
                                   'must be 1 to 200 characters');
    perform pgwallet.check_request(p_device is null or length(p_device) between 1 and 200, 'device',
                                   'must be 1 to 200 characters');
    select * into v_card from pgwallet.cards where uid = p_uid;
    insert into pgwallet.card_scans (uid, card_id, status, location, device)
    values (p_uid, v_card.id,
            case when v_card.id is null then 'unknown' when v_card.status = 'active' then 'found' else 'blocked' end,
            p_location, p_device);
    if v_card.id is null then
        return jsonb_build_object('status', 'unknown', 'uid', p_uid);
    end if;
    return pgwallet.card_json(v_card);
end
$$;

-- set_card_status: blocks (lost or stolen) or unblocks a card; a blocked card's account refuses every debit
-- with CARD_BLOCKED (pgwallet.set_debit_refusal). A replaced or cashed-out card stays as it is.
-- Locks: the card row, then its account row. Raises: INVALID_REQUEST, CARD_NOT_FOUND, INVALID_STATE_TRANSITION.
create or replace function pgwallet.set_card_status(p_card_id bigint, p_status text, p_reason text default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_card pgwallet.cards;
begin
    perform pgwallet.check_request(p_status in ('active', 'blocked'), 'status', 'must be active or blocked');
    perform pgwallet.check_request(p_reason is null or length(p_reason) between 1 and 200, 'reason',
                                   'must be 1 to 200 characters');
    v_card := pgwallet.lock_card(p_card_id);
    if v_card.status = 'cashed_out' or v_card.replaced_by is not null then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('card %s is %s', p_card_id,
                              case when v_card.replaced_by is not null
                                   then 'replaced by card ' || v_card.replaced_by else v_card.status end),
            'card_id');
    end if;
    update pgwallet.cards set status = p_status, status_reason = p_reason, updated_at = now()
    where id = p_card_id
    returning * into v_card;
    -- every ledger call refuses the blocked card's debits, not only this domain's procedures
    perform pgwallet.set_debit_refusal(v_card.account_id, case when p_status = 'blocked' then 'CARD_BLOCKED' end);
    return pgwallet.card_json(v_card);
end
$$;

-- replace_card: issues a new card (uid p_new_uid, same holder and currency), moves the old card's whole
-- balance to it and blocks the old one, atomically, once per idempotency key.
-- Locks: the old card row, then see post_legs. Raises: INVALID_REQUEST, CARD_NOT_FOUND, CARD_UID_TAKEN,
-- INVALID_STATE_TRANSITION, DUPLICATE_REQUEST.
create or replace function pgwallet.replace_card(p_card_id bigint, p_new_uid text, p_client_request_id text,
                                                 p_reason text default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_request  jsonb;
    v_response jsonb;
    v_old      pgwallet.cards;
    v_new      jsonb;
    v_balance  bigint;
    v_op       bigint;
begin
    perform pgwallet.check_request(p_reason is null or length(p_reason) between 1 and 200, 'reason',
                                   'must be 1 to 200 characters');
    v_request := jsonb_build_object('card_id', p_card_id, 'new_uid', p_new_uid, 'reason', p_reason);
    v_response := pgwallet.claim_idempotency_key('replace_card', p_client_request_id, v_request);
    if v_response is not null then
        return v_response;
    end if;
    v_old := pgwallet.lock_card(p_card_id);
    if v_old.status = 'cashed_out' or v_old.replaced_by is not null then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('card %s is already %s', p_card_id,
                              case when v_old.replaced_by is not null then 'replaced' else 'cashed out' end),
            'card_id');
    end if;
    v_new := pgwallet.issue_card(p_new_uid, v_old.currency, v_old.holder, v_old.payout_method);
    select balance - held into v_balance from pgwallet.accounts where id = v_old.account_id for update;
    if v_balance > 0 then
        -- the card's own move to its replacement goes through even when it was blocked first (a lost card)
        perform pgwallet.set_debit_refusal(v_old.account_id, null);
        v_op := nextval('pgwallet.operation_id_seq');
        perform pgwallet.post_legs(v_op, 'card_replacement', array[v_old.account_id],
                                   array[(v_new ->> 'account_id')::bigint], array[v_balance],
                                   jsonb_build_object('old_card_id', p_card_id, 'new_card_id', v_new -> 'card_id'));
    end if;
    perform pgwallet.set_debit_refusal(v_old.account_id, 'CARD_BLOCKED');
    update pgwallet.cards
    set status = 'blocked', status_reason = coalesce(p_reason, 'replaced'),
        replaced_by = (v_new ->> 'card_id')::bigint, updated_at = now()
    where id = p_card_id;
    v_response := jsonb_build_object('old_card_id', p_card_id, 'new_card_id', (v_new ->> 'card_id')::bigint,
                                     'new_uid', p_new_uid, 'moved_amount', v_balance, 'currency', v_old.currency,
                                     'operation_id', v_op, 'created_at', now(), 'replayed', false);
    return pgwallet.complete_idempotency_key('replace_card', p_client_request_id, v_request, v_response);
end
$$;

-- card_history: the card's ledger entries, newest first (orders, refunds, recharges, replacement,
-- cash-out), p_limit at a time. Locks nothing. Raises: CARD_NOT_FOUND, INVALID_REQUEST.
create or replace function pgwallet.card_history(p_card_id bigint, p_limit integer default 50,
                                                 p_before_entry_id bigint default null)
returns table (entry_id bigint, transfer_id bigint, operation_id bigint, kind text,
               counterparty_account_id bigint, amount bigint, new_balance bigint, metadata jsonb,
               created_at timestamptz)
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_account bigint;
begin
    perform pgwallet.check_request(p_limit between 1 and 1000, 'limit', 'must be 1 to 1000');
    select account_id into v_account from pgwallet.cards where id = p_card_id;
    if not found then
        perform pgwallet.raise_error('CARD_NOT_FOUND', pg_catalog.format('card %s', p_card_id), 'card_id');
    end if;
    return query
    select h.entry_id, h.transfer_id, h.operation_id, h.kind, h.counterparty_account_id, h.amount, h.new_balance,
           h.metadata, h.created_at
    from pgwallet.account_history(v_account, p_limit, p_before_entry_id) h;
end
$$;

-- create_bar: a bar (point of sale, code p_code) with its revenue collector account. Locks nothing.
-- Raises: INVALID_REQUEST.
create or replace function pgwallet.create_bar(p_code text, p_name text, p_currency text default 'EUR')
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_bar pgwallet.bars;
begin
    p_currency := coalesce(p_currency, 'EUR');
    perform pgwallet.check_request(p_code ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$', 'code',
                                   'must be 1 to 64 letters, digits, dots, colons, dashes or underscores');
    perform pgwallet.check_request(length(p_name) between 1 and 200, 'name', 'must be 1 to 200 characters');
    perform pgwallet.check_request(exists (select 1 from pgwallet.currencies where code = p_currency),
                                   'currency', 'must be a known currency code');
    perform pgwallet.check_request(not exists (select 1 from pgwallet.bars where code = p_code), 'code',
                                   'is taken by another bar');
    insert into pgwallet.bars (code, name, currency, revenue_account_id)
    values (p_code, p_name, p_currency,
            (pgwallet.create_account(p_currency, 'revenue', 'bar ' || p_code, false, true) ->> 'id')::bigint)
    returning * into v_bar;
    return to_jsonb(v_bar);
end
$$;

-- create_staff: a staff member, active. Locks nothing. Raises: INVALID_REQUEST.
create or replace function pgwallet.create_staff(p_name text)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_staff pgwallet.staff;
begin
    perform pgwallet.check_request(length(p_name) between 1 and 200, 'name', 'must be 1 to 200 characters');
    insert into pgwallet.staff (name) values (p_name) returning * into v_staff;
    return to_jsonb(v_staff);
end
$$;

-- require_staff: the active staff member p_staff_id, who a staff call acts as (recorded, and what rate
-- limits count). Locks nothing. Raises: STAFF_NOT_AUTHORIZED naming p_field (unknown or inactive).
create or replace function pgwallet.require_staff(p_staff_id bigint, p_field text default 'staff_id')
returns pgwallet.staff
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_staff pgwallet.staff;
begin
    select * into v_staff from pgwallet.staff where id = p_staff_id and status = 'active';
    if not found then
        perform pgwallet.raise_error('STAFF_NOT_AUTHORIZED',
                                     pg_catalog.format('staff %s is unknown or not active', p_staff_id), p_field);
    end if;
    return v_staff;
end
$$;

-- set_staff_status: activates or deactivates a staff member. Locks: the staff row.
-- Raises: INVALID_REQUEST, STAFF_NOT_AUTHORIZED (unknown staff).
create or replace function pgwallet.set_staff_status(p_staff_id bigint, p_status text)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_staff pgwallet.staff;
begin
    perform pgwallet.check_request(p_status in ('active', 'inactive'), 'status', 'must be active or inactive');
    update pgwallet.staff set status = p_status where id = p_staff_id returning * into v_staff;
    if not found then
        perform pgwallet.raise_error('STAFF_NOT_AUTHORIZED', pg_catalog.format('staff %s is unknown', p_staff_id),
                                     'staff_id');
    end if;
    return to_jsonb(v_staff);
end
$$;

-- create_checkpoint: a recharge checkpoint with its cash drawer account. Locks nothing.
-- Raises: INVALID_REQUEST.
create or replace function pgwallet.create_checkpoint(p_name text, p_currency text default 'EUR')
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_checkpoint pgwallet.checkpoints;
begin
    p_currency := coalesce(p_currency, 'EUR');
    perform pgwallet.check_request(length(p_name) between 1 and 200, 'name', 'must be 1 to 200 characters');
    perform pgwallet.check_request(exists (select 1 from pgwallet.currencies where code = p_currency),
                                   'currency', 'must be a known currency code');
    insert into pgwallet.checkpoints (name, currency, drawer_account_id)
    values (p_name, p_currency,
            (pgwallet.create_account(p_currency, 'cash_drawer', 'drawer ' || p_name, true, false) ->> 'id')::bigint)
    returning * into v_checkpoint;
    return to_jsonb(v_checkpoint);
end
$$;

-- get_checkpoint: a checkpoint with its currency's exponent and the cash its drawer should hold now.
-- Locks nothing. Raises: CHECKPOINT_NOT_FOUND.
create or replace function pgwallet.get_checkpoint(p_checkpoint_id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_result jsonb;
begin
    select to_jsonb(k) || jsonb_build_object('exponent', c.exponent, 'expected_cash', -a.balance) into v_result
    from pgwallet.checkpoints k
    join pgwallet.currencies c on c.code = k.currency
    join pgwallet.accounts a on a.id = k.drawer_account_id
    where k.id = p_checkpoint_id;
    if v_result is null then
        perform pgwallet.raise_error('CHECKPOINT_NOT_FOUND', pg_catalog.format('checkpoint %s', p_checkpoint_id),
                                     'checkpoint_id');
    end if;
    return v_result;
end
$$;

-- process_bar_order: one order at a bar terminal: checks the items against total_amount, locks the card,
-- debits it and credits the bar's revenue (a collector slot), records the order and its items, once per
-- client_request_id. Writes no scan log. Locks: the card's account row (not the card row), one revenue slot.
-- Raises: INVALID_REQUEST, CARD_NOT_FOUND, CARD_BLOCKED, BAR_NOT_FOUND, INSUFFICIENT_FUNDS, CURRENCY_MISMATCH,
-- DUPLICATE_REQUEST.
-- The busiest path of the festival, so it runs as few statements as it can (each costs an executor start):
-- the input checks are plain conditions, and the card's new balance is worked out under its lock.
create or replace function pgwallet.process_bar_order(
    p_card_id           bigint,
    p_items             jsonb,
    p_total_amount      bigint,
    p_client_request_id text,
    p_point_of_sale     text)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_request  jsonb;
    v_response jsonb;
    v_sum      numeric;
    v_items_ok boolean;
    v_card     pgwallet.cards;
    v_bar      pgwallet.bars;
    v_op       bigint;
    v_posted   record;
    v_order    bigint;
    v_balance  bigint;
    v_item     jsonb;
begin
    if (jsonb_typeof(p_items) = 'array' and jsonb_array_length(p_items) between 1 and 100) is not true then
        perform pgwallet.raise_error('INVALID_REQUEST', 'items: must be a JSON array of 1 to 100 items', 'items');
    end if;
    -- every item well-formed, and their sum, in a loop of simple expressions (cheaper than a query with an
    -- aggregate); the case keeps each cast behind the checks that make it safe
    v_sum := 0;
    for k in 0 .. jsonb_array_length(p_items) - 1 loop
        v_item := p_items -> k;
        v_items_ok := case when jsonb_typeof(v_item) <> 'object' then false
                           when v_item - array['sku', 'name', 'quantity', 'unit_price'] <> '{}'::jsonb
                                or jsonb_typeof(v_item -> 'sku') is distinct from 'string'
                                or jsonb_typeof(v_item -> 'name') is distinct from 'string'
                                or jsonb_typeof(v_item -> 'quantity') is distinct from 'number'
                                or jsonb_typeof(v_item -> 'unit_price') is distinct from 'number' then false
                           else (v_item ->> 'sku') ~ '^\S.{0,63}$' and length(v_item ->> 'name') between 1 and 200
                            and (v_item -> 'quantity')::numeric between 1 and 9999
                            and scale((v_item -> 'quantity')::numeric) = 0
                            and (v_item -> 'unit_price')::numeric between 1 and 999999999999999
                            and scale((v_item -> 'unit_price')::numeric) = 0 end;
        exit when v_items_ok is not true;
        v_sum := v_sum + (v_item -> 'quantity')::numeric * (v_item -> 'unit_price')::numeric;
    end loop;
    if v_items_ok is not true then
        perform pgwallet.raise_error('INVALID_REQUEST', 'items: each item is {sku, name, quantity, unit_price}: '
            'quantity 1 to 9999, unit_price positive minor units', 'items');
    elsif (p_total_amount > 0) is not true then
        perform pgwallet.raise_error('INVALID_REQUEST', 'total_amount: must be a positive whole number of minor units',
                                     'total_amount');
    elsif (v_sum = p_total_amount) is not true then
        perform pgwallet.raise_error('INVALID_REQUEST',
            'total_amount: must equal the sum of quantity * unit_price of the items', 'total_amount');
    elsif (length(p_point_of_sale) between 1 and 64) is not true then
        perform pgwallet.raise_error('INVALID_REQUEST', 'point_of_sale: must be 1 to 64 characters', 'point_of_sale');
    end if;
    v_request := jsonb_build_object('card_id', p_card_id, 'items', p_items, 'total_amount', p_total_amount,
                                    'point_of_sale', p_point_of_sale);
    v_response := pgwallet.claim_idempotency_key('bar_order', p_client_request_id, v_request);
    if v_response is not null then
        return v_response;
    end if;
    select * into v_bar from pgwallet.bars where code = p_point_of_sale;
    if not found then
        perform pgwallet.raise_error('BAR_NOT_FOUND', pg_catalog.format('point of sale %s', p_point_of_sale),
                                     'point_of_sale');
    end if;
    -- The card's account row is the lock (post_legs takes it anyway): every change of a card's status locks
    -- that row too, so the status read after it is the committed one, and the card row is never written here.
    select a.balance into v_balance from pgwallet.accounts a
    where a.id = (select c.account_id from pgwallet.cards c where c.id = p_card_id)
    for update;
    if not found then
        perform pgwallet.raise_error('CARD_NOT_FOUND', pg_catalog.format('card %s', p_card_id), 'card_id');
    end if;
    select * into v_card from pgwallet.cards where id = p_card_id;
    if v_card.status <> 'active' then
        perform pgwallet.raise_error('CARD_BLOCKED', pg_catalog.format('card %s is %s', p_card_id, v_card.status),
                                     'card_id');
    end if;
    v_op := nextval('pgwallet.operation_id_seq');
    v_posted := pgwallet.post_legs(v_op, 'bar_order', array[v_card.account_id], array[v_bar.revenue_account_id],
                                   array[p_total_amount],
                                   jsonb_build_object('card_id', p_card_id, 'point_of_sale', p_point_of_sale,
                                                      'client_request_id', p_client_request_id));
    -- a conflict here means the key expired and was purged while the order stands: never a second order
    -- under one id (the whole transaction rolls back)
    insert into pgwallet.bar_orders (card_id, bar_id, currency, total_amount, client_request_id, operation_id,
                                     transfer_id)
    values (p_card_id, v_bar.id, v_posted.currencies[1], p_total_amount, p_client_request_id, v_op,
            v_posted.transfer_ids[1])
    on conflict (client_request_id) do nothing
    returning id into v_order;
    if v_order is null then
        perform pgwallet.raise_error('DUPLICATE_REQUEST',
            pg_catalog.format('order %s exists (its idempotency key has expired)', p_client_request_id),
            'client_request_id');
    end if;
    insert into pgwallet.bar_order_items (order_id, line, sku, name, quantity, unit_price)
    select v_order, o, i ->> 'sku', i ->> 'name', (i ->> 'quantity')::integer, (i ->> 'unit_price')::bigint
    from jsonb_array_elements(p_items) with ordinality as x(i, o);
    v_response := jsonb_build_object(
        'order_id', v_order, 'card_id', p_card_id, 'point_of_sale', p_point_of_sale, 'bar_id', v_bar.id,
        'total_amount', p_total_amount, 'currency', v_posted.currencies[1], 'items', jsonb_array_length(p_items),
        'card_balance', v_balance - p_total_amount, 'operation_id', v_op, 'transfer_id', v_posted.transfer_ids[1],
        'created_at', now(), 'replayed', false);
    return pgwallet.complete_idempotency_key('bar_order', p_client_request_id, v_request, v_response);
end
$$;

-- refund_bar_order: gives back to the card (or the card that replaced it) the whole rest of an order, or
-- the items [{sku, quantity}] given; never more than was paid; once per client_request_id.
-- Locks: the order row, then see post_legs (all slots of the bar's revenue: money leaves a collector).
-- Raises: INVALID_REQUEST, ORDER_NOT_FOUND, INVALID_STATE_TRANSITION, INSUFFICIENT_FUNDS, DUPLICATE_REQUEST.
create or replace function pgwallet.refund_bar_order(p_order_id bigint, p_client_request_id text,
                                                     p_items jsonb default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_request  jsonb;
    v_response jsonb;
    v_order    pgwallet.bar_orders;
    v_amount   bigint;
    v_card     pgwallet.cards;
    v_revenue  bigint;
    v_op       bigint;
    v_refund   bigint;
begin
    perform pgwallet.check_request(case when p_items is null then true when jsonb_typeof(p_items) = 'array' then
        jsonb_array_length(p_items) between 1 and 100
        and not exists (select 1 from jsonb_array_elements(p_items) i
                        where case when jsonb_typeof(i) <> 'object' then true
                                   else i - array['sku', 'quantity'] <> '{}'::jsonb
                                     or jsonb_typeof(i -> 'sku') is distinct from 'string'
                                     or jsonb_typeof(i -> 'quantity') is distinct from 'number'
                                     or (i ->> 'quantity') !~ '^[1-9][0-9]{0,3}$' end)
        and (select count(distinct i ->> 'sku') from jsonb_array_elements(p_items) i) = jsonb_array_length(p_items)
        end,
        'items', 'must be a JSON array of 1 to 100 {sku, quantity}, each sku once, quantity 1 to 9999');
    v_request := jsonb_build_object('order_id', p_order_id, 'items', p_items);
    v_response := pgwallet.claim_idempotency_key('refund_bar_order', p_client_request_id, v_request);
    if v_response is not null then
        return v_response;
    end if;
    if exists (select 1 from pgwallet.bar_refunds where client_request_id = p_client_request_id) then
        perform pgwallet.raise_error('DUPLICATE_REQUEST',
            pg_catalog.format('refund %s exists (its idempotency key has expired)', p_client_request_id),
            'client_request_id');
    end if;
    select * into v_order from pgwallet.bar_orders where id = p_order_id for update;
    if not found then
        perform pgwallet.raise_error('ORDER_NOT_FOUND', pg_catalog.format('order %s', p_order_id), 'order_id');
    end if;
    if v_order.refunded_amount = v_order.total_amount then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
                                     pg_catalog.format('order %s is refunded in full', p_order_id), 'order_id');
    end if;
    if p_items is null then
        v_amount := v_order.total_amount - v_order.refunded_amount;
        update pgwallet.bar_order_items set refunded_quantity = quantity where order_id = p_order_id;
    else
        -- every sku must be on the order with enough quantity left; a sku on several lines is taken line by line
        perform pgwallet.check_request(not exists (
            select 1 from jsonb_array_elements(p_items) i
            where (i ->> 'quantity')::integer > coalesce((
                select sum(l.quantity - l.refunded_quantity) from pgwallet.bar_order_items l
                where l.order_id = p_order_id and l.sku = i ->> 'sku'), 0)),
            'items', 'each sku must be on the order with that quantity not yet refunded');
        with wanted as (
            select i ->> 'sku' as sku, (i ->> 'quantity')::integer as quantity from jsonb_array_elements(p_items) i
        ), lines as (
            select l.line, l.unit_price, least(l.quantity - l.refunded_quantity,
                       greatest(0, w.quantity - coalesce(sum(l.quantity - l.refunded_quantity) over (
                           partition by l.sku order by l.line rows between unbounded preceding and 1 preceding), 0)))
                       as take
            from pgwallet.bar_order_items l join wanted w on w.sku = l.sku
            where l.order_id = p_order_id
        ), updated as (
            update pgwallet.bar_order_items l set refunded_quantity = l.refunded_quantity + x.take
            from lines x where l.order_id = p_order_id and l.line = x.line and x.take > 0
            returning x.take * x.unit_price as amount
        )
        select sum(amount)::bigint into v_amount from updated;
    end if;
    v_amount := least(v_amount, v_order.total_amount - v_order.refunded_amount);
    -- the refund goes to the card that holds the balance now: the last of its replacements
    select * into v_card from pgwallet.cards where id = v_order.card_id;
    while v_card.replaced_by is not null loop
        select * into v_card from pgwallet.cards where id = v_card.replaced_by;
    end loop;
    select revenue_account_id into v_revenue from pgwallet.bars where id = v_order.bar_id;
    v_op := nextval('pgwallet.operation_id_seq');
    perform pgwallet.post_legs(v_op, 'bar_refund', array[v_revenue], array[v_card.account_id], array[v_amount],
                               jsonb_build_object('order_id', p_order_id, 'client_request_id', p_client_request_id));
    update pgwallet.bar_orders set refunded_amount = refunded_amount + v_amount where id = p_order_id
    returning * into v_order;
    insert into pgwallet.bar_refunds (order_id, amount, items, client_request_id, operation_id)
    values (p_order_id, v_amount, p_items, p_client_request_id, v_op)
    returning id into v_refund;
    v_response := jsonb_build_object(
        'refund_id', v_refund, 'order_id', p_order_id, 'card_id', v_card.id, 'amount', v_amount,
        'currency', v_order.currency, 'refunded_amount', v_order.refunded_amount,
        'total_amount', v_order.total_amount, 'operation_id', v_op, 'created_at', now(), 'replayed', false);
    return pgwallet.complete_idempotency_key('refund_bar_order', p_client_request_id, v_request, v_response);
end
$$;

-- get_bar_order: one order with its items and what was refunded. Locks nothing. Raises: ORDER_NOT_FOUND.
create or replace function pgwallet.get_bar_order(p_order_id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_order pgwallet.bar_orders;
begin
    select * into v_order from pgwallet.bar_orders where id = p_order_id;
    if not found then
        perform pgwallet.raise_error('ORDER_NOT_FOUND', pg_catalog.format('order %s', p_order_id), 'order_id');
    end if;
    return jsonb_build_object(
        'order_id', v_order.id, 'card_id', v_order.card_id, 'bar_id', v_order.bar_id,
        'point_of_sale', (select code from pgwallet.bars where id = v_order.bar_id),
        'total_amount', v_order.total_amount, 'refunded_amount', v_order.refunded_amount,
        'currency', v_order.currency, 'client_request_id', v_order.client_request_id,
        'operation_id', v_order.operation_id, 'created_at', v_order.created_at,
        'items', (select jsonb_agg(jsonb_build_object('line', l.line, 'sku', l.sku, 'name', l.name,
                                                      'quantity', l.quantity, 'unit_price', l.unit_price,
                                                      'refunded_quantity', l.refunded_quantity) order by l.line)
                  from pgwallet.bar_order_items l where l.order_id = v_order.id));
end
$$;

-- recharge_json: the public view of a recharge, with the card's balance after it. Locks nothing.
create or replace function pgwallet.recharge_json(p_recharge pgwallet.recharges, p_account_id bigint)
returns jsonb
language sql
stable
set search_path = pgwallet, pg_temp
as $$
    select jsonb_build_object(
        'recharge_id', p_recharge.id, 'card_id', p_recharge.card_id, 'amount', p_recharge.amount,
        'currency', p_recharge.currency, 'method', p_recharge.method,
        'stripe_session_id', p_recharge.stripe_session_id, 'staff_id', p_recharge.staff_id,
        'checkpoint_id', p_recharge.checkpoint_id, 'operation_id', p_recharge.operation_id,
        'card_balance', (select balance from pgwallet.accounts where id = p_account_id),
        'created_at', p_recharge.created_at, 'replayed', false)
$$;

-- process_stripe_recharge: credits the card with a Stripe Checkout payment, from the Stripe clearing account.
-- The session id is the idempotency key: a redelivered webhook replays the first result. A blocked card is
-- still credited (the money is paid; it is refunded at close-out), a replaced one's replacement is. At most
-- cashless_stripe_recharge_max, and never past cashless_card_balance_max. Webhook tier: the handler verifies
-- Stripe's signature, and no other tier may call this. Locks: the card row, then see post_legs.
-- Raises: INVALID_REQUEST, CARD_NOT_FOUND, INVALID_STATE_TRANSITION (cashed-out card), LIMIT_EXCEEDED,
-- CURRENCY_MISMATCH, DUPLICATE_REQUEST.
create or replace function pgwallet.process_stripe_recharge(p_card_id bigint, p_amount bigint,
                                                            p_stripe_session_id text, p_metadata jsonb default '{}')
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_request  jsonb;
    v_response jsonb;
    v_card     pgwallet.cards;
    v_op       bigint;
    v_recharge pgwallet.recharges;
    v_max      bigint := coalesce(pgwallet.setting('cashless_stripe_recharge_max'), '9223372036854775807')::bigint;
    v_cap      bigint := coalesce(pgwallet.setting('cashless_card_balance_max'), '9223372036854775807')::bigint;
    v_balance  bigint;
begin
    p_metadata := coalesce(p_metadata, '{}');
    perform pgwallet.check_request(p_amount > 0, 'amount', 'must be a positive whole number of minor units');
    perform pgwallet.check_metadata(p_metadata);
    perform pgwallet.check_request(p_stripe_session_id ~ '^[A-Za-z0-9_]{1,255}$', 'stripe_session_id',
                                   'must be 1 to 255 letters, digits or underscores');
    v_request := jsonb_build_object('card_id', p_card_id, 'amount', p_amount, 'metadata', p_metadata);
    v_response := pgwallet.claim_idempotency_key('stripe_recharge', p_stripe_session_id, v_request);
    if v_response is not null then
        return v_response;
    end if;
    select * into v_recharge from pgwallet.recharges where stripe_session_id = p_stripe_session_id;
    if found then
        -- the key expired, the recharge stands: a very late redelivery replays it
        return pgwallet.recharge_json(v_recharge, (select account_id from pgwallet.cards where id = v_recharge.card_id))
               || '{"replayed": true}';
    end if;
    -- a replaced card's money lives on its replacement: find it first, then lock only that one
    select * into v_card from pgwallet.cards where id = p_card_id;
    if not found then
        perform pgwallet.raise_error('CARD_NOT_FOUND', pg_catalog.format('card %s', p_card_id), 'card_id');
    end if;
    while v_card.replaced_by is not null loop
        select * into v_card from pgwallet.cards where id = v_card.replaced_by;
    end loop;
    v_card := pgwallet.lock_card(v_card.id);
    while v_card.replaced_by is not null loop  -- replaced in the meantime
        v_card := pgwallet.lock_card(v_card.replaced_by);
    end loop;
    if v_card.status = 'cashed_out' then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION', pg_catalog.format('card %s is cashed out', v_card.id),
                                     'card_id');
    end if;
    select balance into v_balance from pgwallet.accounts where id = v_card.account_id;  -- locked by lock_card
    if p_amount > v_max then
        perform pgwallet.raise_error('LIMIT_EXCEEDED',
            pg_catalog.format('a Stripe recharge is at most %s, not %s', pgwallet.money(v_max, v_card.currency),
                              pgwallet.money(p_amount, v_card.currency)), 'amount');
    elsif v_balance > v_cap - p_amount then
        perform pgwallet.raise_error('LIMIT_EXCEEDED',
            pg_catalog.format('card %s holds %s: %s more would pass the maximum balance of %s', v_card.id,
                              pgwallet.money(v_balance, v_card.currency), pgwallet.money(p_amount, v_card.currency),
                              pgwallet.money(v_cap, v_card.currency)), 'amount');
    end if;
    v_op := nextval('pgwallet.operation_id_seq');
    perform pgwallet.post_legs(v_op, 'stripe_recharge', array[pgwallet.cashless_account(v_card.currency, 'stripe_clearing')],
                               array[v_card.account_id], array[p_amount],
                               p_metadata || jsonb_build_object('card_id', v_card.id,
                                                                'stripe_session_id', p_stripe_session_id));
    insert into pgwallet.recharges (card_id, amount, currency, method, stripe_session_id, operation_id, metadata)
    values (v_card.id, p_amount, v_card.currency, 'stripe', p_stripe_session_id, v_op, p_metadata)
    returning * into v_recharge;
    return pgwallet.complete_idempotency_key('stripe_recharge', p_stripe_session_id, v_request,
                                             pgwallet.recharge_json(v_recharge, v_card.account_id));
end
$$;

-- process_checkpoint_recharge: credits the card with cash (from the checkpoint's cash drawer) or a card
-- payment (from the card terminal clearing account), taken by an active staff member at a known checkpoint,
-- within the limits of pgwallet.settings (minimum, maximum, maximum card balance); once per client_request_id.
-- Locks: the card row, then see post_legs. Raises: INVALID_REQUEST, CARD_NOT_FOUND, CARD_BLOCKED,
-- STAFF_NOT_AUTHORIZED, CHECKPOINT_NOT_FOUND, LIMIT_EXCEEDED, CURRENCY_MISMATCH, DUPLICATE_REQUEST.
create or replace function pgwallet.process_checkpoint_recharge(
    p_card_id           bigint,
    p_amount            bigint,
    p_staff_id          bigint,
    p_checkpoint_id     bigint,
    p_payment_method    text,
    p_client_request_id text)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_request    jsonb;
    v_response   jsonb;
    v_card       pgwallet.cards;
    v_checkpoint pgwallet.checkpoints;
    v_min        bigint := coalesce(pgwallet.setting('cashless_recharge_min'), '1')::bigint;
    v_max        bigint := coalesce(pgwallet.setting('cashless_recharge_max'), '9223372036854775807')::bigint;
    v_cap        bigint := coalesce(pgwallet.setting('cashless_card_balance_max'), '9223372036854775807')::bigint;
    v_balance    bigint;
    v_source     bigint;
    v_op         bigint;
    v_recharge   pgwallet.recharges;
begin
    perform pgwallet.check_request(p_amount > 0, 'amount', 'must be a positive whole number of minor units');
    perform pgwallet.check_request(p_payment_method in ('cash', 'card'), 'payment_method', 'must be cash or card');
    v_request := jsonb_build_object('card_id', p_card_id, 'amount', p_amount, 'staff_id', p_staff_id,
                                    'checkpoint_id', p_checkpoint_id, 'payment_method', p_payment_method);
    v_response := pgwallet.claim_idempotency_key('checkpoint_recharge', p_client_request_id, v_request);
    if v_response is not null then
        return v_response;
    end if;
    if exists (select 1 from pgwallet.recharges where client_request_id = p_client_request_id) then
        perform pgwallet.raise_error('DUPLICATE_REQUEST',
            pg_catalog.format('recharge %s exists (its idempotency key has expired)', p_client_request_id),
            'client_request_id');
    end if;
    if not exists (select 1 from pgwallet.staff where id = p_staff_id and status = 'active') then
        perform pgwallet.raise_error('STAFF_NOT_AUTHORIZED',
                                     pg_catalog.format('staff %s is unknown or not active', p_staff_id), 'staff_id');
    end if;
    select * into v_checkpoint from pgwallet.checkpoints where id = p_checkpoint_id;
    if not found then
        perform pgwallet.raise_error('CHECKPOINT_NOT_FOUND', pg_catalog.format('checkpoint %s', p_checkpoint_id),
                                     'checkpoint_id');
    end if;
    if p_amount < v_min or p_amount > v_max then
        perform pgwallet.raise_error('LIMIT_EXCEEDED',
            pg_catalog.format('a recharge is %s to %s, not %s', pgwallet.money(v_min, v_checkpoint.currency),
                              pgwallet.money(v_max, v_checkpoint.currency), pgwallet.money(p_amount, v_checkpoint.currency)),
            'amount');
    end if;
    v_card := pgwallet.lock_card(p_card_id);
    if v_card.status <> 'active' then
        perform pgwallet.raise_error('CARD_BLOCKED', pg_catalog.format('card %s is %s', p_card_id, v_card.status),
                                     'card_id');
    end if;
    if v_card.currency <> v_checkpoint.currency then
        perform pgwallet.raise_error('CURRENCY_MISMATCH',
            pg_catalog.format('card %s holds %s, checkpoint %s takes %s', p_card_id, v_card.currency,
                              p_checkpoint_id, v_checkpoint.currency), 'checkpoint_id');
    end if;
    select balance into v_balance from pgwallet.accounts where id = v_card.account_id for update;
    if v_balance > v_cap - p_amount then
        perform pgwallet.raise_error('LIMIT_EXCEEDED',
            pg_catalog.format('card %s holds %s: %s more would pass the maximum balance of %s', p_card_id,
                              pgwallet.money(v_balance, v_card.currency), pgwallet.money(p_amount, v_card.currency),
                              pgwallet.money(v_cap, v_card.currency)), 'amount');
    end if;
    v_source := case p_payment_method when 'cash' then v_checkpoint.drawer_account_id
                     else pgwallet.cashless_account(v_card.currency, 'card_terminal_clearing') end;
    v_op := nextval('pgwallet.operation_id_seq');
    perform pgwallet.post_legs(v_op, 'checkpoint_recharge', array[v_source], array[v_card.account_id],
                               array[p_amount],
                               jsonb_build_object('card_id', p_card_id, 'staff_id', p_staff_id,
                                                  'checkpoint_id', p_checkpoint_id, 'payment_method', p_payment_method,
                                                  'client_request_id', p_client_request_id));
    insert into pgwallet.recharges (card_id, amount, currency, method, client_request_id, staff_id, checkpoint_id,
                                    operation_id)
    values (p_card_id, p_amount, v_card.currency, p_payment_method, p_client_request_id, p_staff_id, p_checkpoint_id,
            v_op)
    returning * into v_recharge;
    return pgwallet.complete_idempotency_key('checkpoint_recharge', p_client_request_id, v_request,
                                             pgwallet.recharge_json(v_recharge, v_card.account_id));
end
$$;

-- close_drawer: the end of a shift at a checkpoint: the cash the drawer should hold (minus its balance)
-- goes to the cash office account, and the count the staff member made is recorded next to it; once per
-- client_request_id. Locks: the checkpoint row, its drawer account, then one cash office slot.
-- Raises: INVALID_REQUEST, CHECKPOINT_NOT_FOUND, STAFF_NOT_AUTHORIZED, DUPLICATE_REQUEST.
create or replace function pgwallet.close_drawer(p_checkpoint_id bigint, p_staff_id bigint, p_counted_amount bigint,
                                                 p_client_request_id text)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_request    jsonb;
    v_response   jsonb;
    v_checkpoint pgwallet.checkpoints;
    v_expected   bigint;
    v_op         bigint;
    v_closing    pgwallet.drawer_closings;
begin
    perform pgwallet.check_request(p_counted_amount >= 0, 'counted_amount',
                                   'must be a whole number of minor units, zero or more');
    v_request := jsonb_build_object('checkpoint_id', p_checkpoint_id, 'staff_id', p_staff_id,
                                    'counted_amount', p_counted_amount);
    v_response := pgwallet.claim_idempotency_key('close_drawer', p_client_request_id, v_request);
    if v_response is not null then
        return v_response;
    end if;
    if exists (select 1 from pgwallet.drawer_closings where client_request_id = p_client_request_id) then
        perform pgwallet.raise_error('DUPLICATE_REQUEST',
            pg_catalog.format('drawer closing %s exists (its idempotency key has expired)', p_client_request_id),
            'client_request_id');
    end if;
    select * into v_checkpoint from pgwallet.checkpoints where id = p_checkpoint_id for update;
    if not found then
        perform pgwallet.raise_error('CHECKPOINT_NOT_FOUND', pg_catalog.format('checkpoint %s', p_checkpoint_id),
                                     'checkpoint_id');
    end if;
    if not exists (select 1 from pgwallet.staff where id = p_staff_id and status = 'active') then
        perform pgwallet.raise_error('STAFF_NOT_AUTHORIZED',
                                     pg_catalog.format('staff %s is unknown or not active', p_staff_id), 'staff_id');
    end if;
    select -balance into v_expected from pgwallet.accounts where id = v_checkpoint.drawer_account_id for update;
    if v_expected > 0 then
        v_op := nextval('pgwallet.operation_id_seq');
        perform pgwallet.post_legs(v_op, 'drawer_close', array[pgwallet.cashless_account(v_checkpoint.currency, 'cash_office')],
                                   array[v_checkpoint.drawer_account_id], array[v_expected],
                                   jsonb_build_object('checkpoint_id', p_checkpoint_id, 'staff_id', p_staff_id,
                                                      'counted_amount', p_counted_amount));
    elsif v_expected < 0 then
        v_op := nextval('pgwallet.operation_id_seq');
        perform pgwallet.post_legs(v_op, 'drawer_close', array[v_checkpoint.drawer_account_id],
                                   array[pgwallet.cashless_account(v_checkpoint.currency, 'cash_office')],
                                   array[-v_expected],
                                   jsonb_build_object('checkpoint_id', p_checkpoint_id, 'staff_id', p_staff_id,
                                                      'counted_amount', p_counted_amount));
    end if;
    insert into pgwallet.drawer_closings (checkpoint_id, staff_id, currency, expected_amount, counted_amount,
                                          operation_id, client_request_id)
    values (p_checkpoint_id, p_staff_id, v_checkpoint.currency, v_expected, p_counted_amount, v_op,
            p_client_request_id)
    returning * into v_closing;
    v_response := jsonb_build_object(
        'closing_id', v_closing.id, 'checkpoint_id', p_checkpoint_id, 'staff_id', p_staff_id,
        'currency', v_closing.currency, 'expected_amount', v_expected, 'counted_amount', p_counted_amount,
        'difference', p_counted_amount - v_expected, 'operation_id', v_op, 'created_at', v_closing.created_at,
        'replayed', false);
    return pgwallet.complete_idempotency_key('close_drawer', p_client_request_id, v_request, v_response);
end
$$;

-- cash_out: the body of cash_out_card and of the close-out (p_scope names which): pays the card's available
-- balance minus a fee (p_fee, default the cashless_cash_out_fee setting, never more than the balance) to its
-- payout method (the payouts clearing account) and marks the card cashed out; once per key. Works on blocked
-- cards (their money is the holder's). A card that is already cashed out or replaced but has money again (a
-- refund or a released hold that reached it later) is paid out again, with no fee: money never stays
-- stranded on a card nobody can use. Internal. Locks: the card row, then see post_legs.
-- Raises: INVALID_REQUEST, CARD_NOT_FOUND, INVALID_STATE_TRANSITION, DUPLICATE_REQUEST.
create or replace function pgwallet.cash_out(p_scope text, p_card_id bigint, p_client_request_id text,
                                             p_fee bigint)
returns jsonb
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_request  jsonb;
    v_response jsonb;
    v_card     pgwallet.cards;
    v_balance  bigint;
    v_late     boolean;
    v_fee      bigint;
    v_op       bigint;
    v_debits   bigint[] := '{}';
    v_credits  bigint[] := '{}';
    v_amounts  bigint[] := '{}';
    v_cashout  pgwallet.card_cashouts;
begin
    perform pgwallet.check_request(p_fee is null or p_fee >= 0, 'fee', 'must be a whole number of minor units, zero or more');
    v_request := jsonb_build_object('card_id', p_card_id, 'fee', p_fee);
    v_response := pgwallet.claim_idempotency_key(p_scope, p_client_request_id, v_request);
    if v_response is not null then
        return v_response;
    end if;
    if exists (select 1 from pgwallet.card_cashouts where client_request_id = p_client_request_id) then
        perform pgwallet.raise_error('DUPLICATE_REQUEST',
            pg_catalog.format('cash-out %s exists (its idempotency key has expired)', p_client_request_id),
            'client_request_id');
    end if;
    v_card := pgwallet.lock_card(p_card_id);
    select balance - held into v_balance from pgwallet.accounts where id = v_card.account_id;  -- locked above
    v_late := v_card.status = 'cashed_out' or v_card.replaced_by is not null;
    if v_late and v_balance <= 0 then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('card %s is %s', p_card_id,
                              case when v_card.replaced_by is not null then 'replaced: cash out card ' || v_card.replaced_by
                                   else 'already cashed out' end), 'card_id');
    end if;
    v_fee := case when v_late then 0
                  else least(greatest(v_balance, 0), coalesce(p_fee, pgwallet.setting('cashless_cash_out_fee')::bigint, 0))
             end;
    if v_fee > 0 then
        v_debits := v_debits || v_card.account_id;
        v_credits := v_credits || pgwallet.cashless_account(v_card.currency, 'fees');
        v_amounts := v_amounts || v_fee;
    end if;
    if v_balance - v_fee > 0 then
        v_debits := v_debits || v_card.account_id;
        v_credits := v_credits || pgwallet.cashless_account(v_card.currency, 'payouts');
        v_amounts := v_amounts || (v_balance - v_fee);
    end if;
    if array_length(v_amounts, 1) > 0 then
        -- the close-out pays blocked cards too: their refusal is lifted for this move alone
        perform pgwallet.set_debit_refusal(v_card.account_id, null);
        v_op := nextval('pgwallet.operation_id_seq');
        perform pgwallet.post_legs(v_op, 'card_cash_out', v_debits, v_credits, v_amounts,
                                   jsonb_build_object('card_id', p_card_id, 'payout_method', v_card.payout_method));
    end if;
    perform pgwallet.set_debit_refusal(v_card.account_id, 'CARD_BLOCKED');  -- a cashed-out card pays nothing more
    if v_card.replaced_by is null then
        update pgwallet.cards set status = 'cashed_out', updated_at = now() where id = p_card_id;
    end if;
    insert into pgwallet.card_cashouts (card_id, amount, fee, payout_method, operation_id, client_request_id)
    values (p_card_id, greatest(v_balance, 0) - v_fee, v_fee, v_card.payout_method, v_op, p_client_request_id)
    returning * into v_cashout;
    v_response := jsonb_build_object(
        'cashout_id', v_cashout.id, 'card_id', p_card_id, 'amount', v_cashout.amount, 'fee', v_fee,
        'currency', v_card.currency, 'payout_method', v_card.payout_method, 'operation_id', v_op,
        'created_at', v_cashout.created_at, 'replayed', false);
    return pgwallet.complete_idempotency_key(p_scope, p_client_request_id, v_request, v_response);
end
$$;

-- cash_out_card: cash_out by staff, once per client_request_id (keys beginning 'closeout:' are the
-- close-out's own). Staff. Locks: see cash_out. Raises: as cash_out.
create or replace function pgwallet.cash_out_card(p_card_id bigint, p_client_request_id text, p_fee bigint default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_request(p_client_request_id not like 'closeout:%', 'client_request_id',
                                   'keys beginning closeout: belong to the close-out');
    return pgwallet.cash_out('cash_out_card', p_card_id, p_client_request_id, p_fee);
end
$$;

-- cards_to_cash_out: how many cards the close-out still has to pay: neither cashed out nor replaced, or
-- holding money again after that. Locks nothing. Raises: nothing.
create or replace function pgwallet.cards_to_cash_out()
returns bigint
language sql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
    select count(*) from pgwallet.cards c join pgwallet.accounts a on a.id = c.account_id
    where (c.status <> 'cashed_out' and c.replaced_by is null) or a.balance - a.held > 0
$$;

-- cash_out_cards: one batch of the close-out: cash_out for up to p_batch_size cards in id order after
-- p_after_card_id (those cards_to_cash_out counts), each under the close-out's own key
-- 'closeout:<card id>:<cash-outs so far>' (a rerun replays, never pays twice). A card whose cash-out
-- fails is skipped and reported (WARNING), never rolls the batch back. Returns how many cards and how
-- much (amount, fee) this batch paid, the cards skipped, and the last card id to continue from.
-- Call it in a loop, one transaction per batch. Locks: see cash_out, card by card. Raises: INVALID_REQUEST.
create or replace function pgwallet.cash_out_cards(p_after_card_id bigint default 0, p_batch_size integer default 500,
                                                   p_fee bigint default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_id      bigint;
    v_last    bigint := coalesce(p_after_card_id, 0);
    v_result  jsonb;
    v_cards   integer := 0;
    v_amount  bigint := 0;
    v_fee     bigint := 0;
    v_skipped bigint[] := '{}';
begin
    perform pgwallet.check_request(p_batch_size between 1 and 10000, 'batch_size', 'must be 1 to 10000');
    perform pgwallet.check_request(p_fee is null or p_fee >= 0, 'fee', 'must be a whole number of minor units, zero or more');
    for v_id in select c.id from pgwallet.cards c join pgwallet.accounts a on a.id = c.account_id
                where c.id > v_last
                  and ((c.status <> 'cashed_out' and c.replaced_by is null) or a.balance - a.held > 0)
                order by c.id limit p_batch_size loop
        begin
            v_result := pgwallet.cash_out('closeout', v_id, 'closeout:' || v_id || ':'
                                          || (select count(*) from pgwallet.card_cashouts x where x.card_id = v_id),
                                          p_fee);
            v_cards := v_cards + 1;
            v_amount := v_amount + (v_result ->> 'amount')::bigint;
            v_fee := v_fee + (v_result ->> 'fee')::bigint;
        exception when others then
            raise warning 'pgwallet.cash_out_cards: card % skipped (%: %)', v_id, sqlstate, sqlerrm;
            v_skipped := v_skipped || v_id;
        end;
        v_last := v_id;
    end loop;
    return jsonb_build_object('cards', v_cards, 'amount', v_amount, 'fee', v_fee, 'last_card_id', v_last,
                              'skipped', to_jsonb(v_skipped));
end
$$;

-- list_bars: the bars (points of sale) in id order, p_limit at a time after p_after_id. Locks nothing.
-- Raises: INVALID_REQUEST.
create or replace function pgwallet.list_bars(p_limit integer default 100, p_after_id bigint default 0)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_request(p_limit between 1 and 1000, 'limit', 'must be 1 to 1000');
    return coalesce((select jsonb_agg(to_jsonb(b) order by b.id) from (
        select * from pgwallet.bars x where x.id > coalesce(p_after_id, 0) order by x.id limit p_limit) b), '[]');
end
$$;

-- list_staff: the staff members in id order (only those of status p_status when given), p_limit at a time
-- after p_after_id. Locks nothing. Raises: INVALID_REQUEST.
create or replace function pgwallet.list_staff(p_status text default null, p_limit integer default 100,
                                               p_after_id bigint default 0)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_request(p_limit between 1 and 1000, 'limit', 'must be 1 to 1000');
    perform pgwallet.check_request(p_status is null or p_status in ('active', 'inactive'), 'status',
                                   'must be active or inactive');
    return coalesce((select jsonb_agg(to_jsonb(m) order by m.id) from (
        select * from pgwallet.staff x where x.id > coalesce(p_after_id, 0) and (p_status is null or x.status = p_status)
        order by x.id limit p_limit) m), '[]');
end
$$;

-- list_checkpoints: the recharge checkpoints in id order, each with the cash its drawer should hold,
-- p_limit at a time after p_after_id. Locks nothing. Raises: INVALID_REQUEST.
create or replace function pgwallet.list_checkpoints(p_limit integer default 100, p_after_id bigint default 0)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_request(p_limit between 1 and 1000, 'limit', 'must be 1 to 1000');
    return coalesce((select jsonb_agg(to_jsonb(k) || jsonb_build_object('exponent', c.exponent,
                                                                         'expected_cash', -a.balance) order by k.id)
                     from (select * from pgwallet.checkpoints x where x.id > coalesce(p_after_id, 0)
                           order by x.id limit p_limit) k
                     join pgwallet.currencies c on c.code = k.currency
                     join pgwallet.accounts a on a.id = k.drawer_account_id), '[]');
end
$$;

-- list_cards: the cards in id order (only those of status p_status when given), with their balances,
-- p_limit at a time after p_after_id. Locks nothing. Raises: INVALID_REQUEST.
create or replace function pgwallet.list_cards(p_status text default null, p_limit integer default 100,
                                               p_after_id bigint default 0)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_request(p_limit between 1 and 1000, 'limit', 'must be 1 to 1000');
    perform pgwallet.check_request(p_status is null or p_status in ('active', 'blocked', 'cashed_out'), 'status',
                                   'must be active, blocked or cashed_out');
    return coalesce((select jsonb_agg(pgwallet.card_json(c) order by c.id) from (
        select * from pgwallet.cards x where x.id > coalesce(p_after_id, 0) and (p_status is null or x.status = p_status)
        order by x.id limit p_limit) c), '[]');
end
$$;

-- What each tier may call (the README's matrix). Terminals run as pgwallet_app; the Stripe webhook as
-- pgwallet_webhook; checkpoint desks, set-up, drawers and the close-out are staff work.
grant execute on function
    pgwallet.get_card(bigint),
    pgwallet.lookup_card(text, text, text),
    pgwallet.card_history(bigint, integer, bigint),
    pgwallet.process_bar_order(bigint, jsonb, bigint, text, text),
    pgwallet.get_bar_order(bigint)
    to pgwallet_app;
grant execute on function
    pgwallet.process_stripe_recharge(bigint, bigint, text, jsonb),
    pgwallet.get_card(bigint)
    to pgwallet_webhook;
grant execute on function
    pgwallet.list_bars(integer, bigint),
    pgwallet.list_staff(text, integer, bigint),
    pgwallet.list_checkpoints(integer, bigint),
    pgwallet.list_cards(text, integer, bigint),
    pgwallet.process_checkpoint_recharge(bigint, bigint, bigint, bigint, text, text),
    pgwallet.issue_card(text, text, text, text),
    pgwallet.set_card_status(bigint, text, text),
    pgwallet.replace_card(bigint, text, text, text),
    pgwallet.refund_bar_order(bigint, text, jsonb),
    pgwallet.create_bar(text, text, text),
    pgwallet.create_staff(text),
    pgwallet.set_staff_status(bigint, text),
    pgwallet.create_checkpoint(text, text),
    pgwallet.get_checkpoint(bigint),
    pgwallet.close_drawer(bigint, bigint, bigint, text),
    pgwallet.cash_out_card(bigint, text, bigint),
    pgwallet.cards_to_cash_out(),
    pgwallet.cash_out_cards(bigint, integer, bigint)
    to pgwallet_staff;
