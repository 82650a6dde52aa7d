-- Performer queues with escrow, and tip-grid purchases.
-- Every paid request becomes a queue item whose tokens are held on the user's wallet toward the performer
-- (a ledger hold): captured when the item is finished (the performer keeps the tokens minus the platform
-- fee, which goes to the queue's fee account), voided when it is abandoned or refunded. Features never
-- settle on their own: tip-grid purchases are settled and refunded by their queue item.
-- Positions are never stored: each performer hands out increasing tickets, and an item's position is the
-- number of open items before it (an index-only count), so every transition leaves every position exact.
-- Lock order: the performer's queue row (FOR NO KEY UPDATE), then queue items (ascending id), then holds,
-- then ordinary accounts by ascending id, then collector slots.
-- Events: every transition sends pg_notify on channel 'pgwallet_queue_<performer_id>' at commit; a tip-grid
-- purchase that succeeds also notifies channel 'purchased_item_success' (or, with setting queue_events =
-- 'outbox', stores them for relay_queue_events).

-- Signatures replaced by 0009's trust boundary (the acting user).
drop function if exists pgwallet.create_queue_item(bigint, bigint, bigint, text, text, text, text, text, text, integer, jsonb);
drop function if exists pgwallet.purchase_tip_grid_item(bigint, bigint, bigint, text, text);

-- performer_queue_json: the public view of a performer's queue settings. Locks nothing.
create or replace function pgwallet.performer_queue_json(p_queue pgwallet.performer_queues)
returns jsonb
language sql
stable
set search_path = pgwallet, pg_temp
as $$
    select jsonb_build_object(
        'performer_id', p_queue.performer_id, 'fee_account_id', p_queue.fee_account_id,
        'fee_bps', p_queue.fee_bps, 'max_open', p_queue.max_open,
        'start_timeout_seconds', p_queue.start_timeout_seconds, 'grace_percent', p_queue.grace_percent,
        'created_at', p_queue.created_at, 'updated_at', p_queue.updated_at)
$$;

-- configure_performer_queue: opens or changes a performer's queue: the fee account (same currency, usually
-- a collector), the fee in basis points, the most open items, the start timeout and the grace factor (in
-- percent of an item's expected duration) of the sweep. Null keeps the current value (or the default).
-- Locks: the queue row. Raises: INVALID_REQUEST, ACCOUNT_NOT_FOUND, CURRENCY_MISMATCH.
create or replace function pgwallet.configure_performer_queue(
    p_performer_id          bigint,
    p_fee_account_id        bigint,
    p_fee_bps               integer default null,
    p_max_open              integer default null,
    p_start_timeout_seconds integer default null,
    p_grace_percent         integer default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_performer pgwallet.accounts;
    v_fee       pgwallet.accounts;
    v_queue     pgwallet.performer_queues;
begin
    perform pgwallet.check_request(p_fee_bps is null or p_fee_bps between 0 and 10000, 'fee_bps',
                                   'must be 0 to 10000 basis points');
    perform pgwallet.check_request(p_max_open is null or p_max_open between 1 and 10000, 'max_open',
                                   'must be 1 to 10000');
    perform pgwallet.check_request(p_start_timeout_seconds is null or p_start_timeout_seconds > 0,
                                   'start_timeout_seconds', 'must be a positive number of seconds');
    perform pgwallet.check_request(p_grace_percent is null or p_grace_percent between 100 and 100000,
                                   'grace_percent', 'must be 100 to 100000 percent');
    select * into v_performer from pgwallet.accounts where id = p_performer_id;
    if not found then
        perform pgwallet.raise_error('ACCOUNT_NOT_FOUND', pg_catalog.format('account %s', p_performer_id),
                                     'performer_id');
    end if;
    perform pgwallet.check_request(not v_performer.collector, 'performer_id',
                                   'must be an ordinary account, not a collector');
    select * into v_fee from pgwallet.accounts where id = p_fee_account_id;
    if not found then
        perform pgwallet.raise_error('ACCOUNT_NOT_FOUND', pg_catalog.format('account %s', p_fee_account_id),
                                     'fee_account_id');
    end if;
    perform pgwallet.check_request(p_fee_account_id <> p_performer_id, 'fee_account_id',
                                   'must differ from performer_id');
    if v_fee.currency <> v_performer.currency then
        perform pgwallet.raise_error('CURRENCY_MISMATCH',
            pg_catalog.format('account %s holds %s, account %s holds %s', v_performer.id, v_performer.currency,
                              v_fee.id, v_fee.currency), 'fee_account_id');
    end if;
    insert into pgwallet.performer_queues as q (performer_id, fee_account_id, fee_bps, max_open,
                                                start_timeout_seconds, grace_percent)
    values (p_performer_id, p_fee_account_id, coalesce(p_fee_bps, 2000), coalesce(p_max_open, 50),
            coalesce(p_start_timeout_seconds, 1800), coalesce(p_grace_percent, 200))
    on conflict (performer_id) do update
    set fee_account_id = excluded.fee_account_id,
        fee_bps = coalesce(p_fee_bps, q.fee_bps),
        max_open = coalesce(p_max_open, q.max_open),
        start_timeout_seconds = coalesce(p_start_timeout_seconds, q.start_timeout_seconds),
        grace_percent = coalesce(p_grace_percent, q.grace_percent),
        updated_at = now()
    returning * into v_queue;
    return pgwallet.performer_queue_json(v_queue);
end
$$;

-- queue_position: where an item of p_status with p_ticket stands in its performer's open queue: the
-- STARTED item first, then CREATED items by ticket. position (1 = being performed or next) and the wait
-- (the remaining expected durations before it) are null once the item has left the queue; total counts the
-- open items. Locks nothing (an index-only count).
create or replace function pgwallet.queue_position(p_performer_id bigint, p_ticket bigint, p_status text,
                                                   out "position" integer, out total_in_queue integer,
                                                   out estimated_wait_seconds bigint)
language sql
stable
set search_path = pgwallet, pg_temp
as $$
    select case when p_status in ('CREATED', 'STARTED') then (count(*) filter (where ahead))::integer + 1 end,
           count(*)::integer,
           case when p_status in ('CREATED', 'STARTED') then
               coalesce(sum(ceil(case when o.status = 'STARTED'
                                      then greatest(o.expected_duration_seconds
                                                    - extract(epoch from now() - o.started_at), 0)
                                      else o.expected_duration_seconds end)) filter (where ahead), 0)::bigint
           end
    from (select q.status, q.expected_duration_seconds, q.started_at,
                 p_status = 'CREATED' and q.ticket <> p_ticket and (q.status = 'STARTED' or q.ticket < p_ticket)
                     as ahead
          from pgwallet.queue_items q
          where q.performer_id = p_performer_id and q.status in ('CREATED', 'STARTED')) o
$$;

-- queue_item_json: the public view of a queue item, with its live position. Locks nothing.
create or replace function pgwallet.queue_item_json(p_item pgwallet.queue_items)
returns jsonb
language sql
stable
set search_path = pgwallet, pg_temp
as $$
    select jsonb_build_object(
        'item_id', p_item.id, 'source_feature', p_item.source_feature, 'source_event_id', p_item.source_event_id,
        'performer_id', p_item.performer_id, 'user_id', p_item.user_id, 'hold_id', p_item.hold_id,
        'tokens', p_item.tokens, 'fee', p_item.fee, 'fee_account_id', p_item.fee_account_id,
        'title', p_item.title, 'description', p_item.description,
        'expected_duration_seconds', p_item.expected_duration_seconds, 'metadata', p_item.metadata,
        'status', p_item.status, 'pass_through', p_item.pass_through, 'ticket', p_item.ticket,
        'position', p."position", 'total_in_queue', p.total_in_queue,
        'estimated_wait_seconds', p.estimated_wait_seconds,
        'created_at', p_item.created_at, 'updated_at', p_item.updated_at, 'started_at', p_item.started_at,
        'finished_at', p_item.finished_at,
        'abandoned_at', p_item.abandoned_at, 'refunded_at', p_item.refunded_at, 'settled', p_item.settled,
        'settled_at', p_item.settled_at, 'settlement_transfer_id', p_item.settlement_transfer_id,
        'fee_transfer_id', p_item.fee_transfer_id, 'refund_reason', p_item.refund_reason, 'replayed', false)
    from pgwallet.queue_position(p_item.performer_id, p_item.ticket, p_item.status) p
$$;

-- send_queue_event: sends one event, as setting queue_events says: 'on' (default) pg_notify now (delivered at
-- commit; PostgreSQL serializes the commits of notifying transactions), 'outbox' a row in
-- pgwallet.queue_events that relay_queue_events sends later, 'off' nothing (unless p_always: purchase
-- notifications are the purchase's contract, sent directly then). Locks nothing. Raises: nothing.
create or replace function pgwallet.send_queue_event(p_channel text, p_payload jsonb, p_always boolean default false)
returns void
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_mode text := coalesce(pgwallet.setting('queue_events'), 'on');
begin
    if v_mode = 'outbox' then
        insert into pgwallet.queue_events (channel, payload) values (p_channel, p_payload);
    elsif v_mode <> 'off' or p_always then
        perform pg_catalog.pg_notify(p_channel, p_payload::text);
    end if;
end
$$;

-- notify_queue_item: tells the performer's channel that p_item moved from p_previous_status (null: new).
-- The payload is small: item, status, whether positions behind it changed, and the queue's depth.
-- Locks nothing. Raises: nothing.
create or replace function pgwallet.notify_queue_item(p_item pgwallet.queue_items, p_previous_status text)
returns void
language sql
set search_path = pgwallet, pg_temp
as $$
    select pgwallet.send_queue_event('pgwallet_queue_' || p_item.performer_id, jsonb_build_object(
        'item_id', p_item.id, 'performer_id', p_item.performer_id, 'user_id', p_item.user_id,
        'status', p_item.status, 'previous_status', p_previous_status, 'ticket', p_item.ticket,
        'positions_changed', not p_item.pass_through and p_previous_status is not null,
        'depth', (select count(*) from pgwallet.queue_items q
                  where q.performer_id = p_item.performer_id and q.status in ('CREATED', 'STARTED'))))
$$;

-- relay_queue_events: with queue_events = 'outbox', sends up to p_limit stored events (pg_notify, oldest
-- first) and deletes them; returns how many. One relay at a time (an advisory lock), so a single notifying
-- commit carries a whole batch. Run it in a loop (`pgwallet queue relay --loop`). Locks: the relay's
-- advisory lock, the sent rows. Raises: INVALID_REQUEST.
create or replace function pgwallet.relay_queue_events(p_limit integer default 1000)
returns integer
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_ids bigint[] := '{}';
    e     record;
begin
    perform pgwallet.check_request(p_limit between 1 and 100000, 'limit', 'must be 1 to 100000');
    perform pg_catalog.pg_advisory_xact_lock(1885828980, pg_catalog.hashtext('relay_queue_events'));
    for e in select q.id, q.channel, q.payload from pgwallet.queue_events q order by q.id limit p_limit loop
        perform pg_catalog.pg_notify(e.channel, e.payload::text);
        v_ids := v_ids || e.id;
    end loop;
    delete from pgwallet.queue_events where id = any (v_ids);
    return coalesce(array_length(v_ids, 1), 0);
end
$$;

-- enqueue_item: the intake shared by create_queue_item and purchase_tip_grid_item. Places the hold on the
-- user's wallet toward the performer and creates the item: mode ON waits in the performer's FIFO queue (at
-- most max_open open items); mode OFF (pass-through) starts, finishes and settles at once. Internal.
-- Locks: the queue row (mode ON), then the user's account, then see capture_hold_split (mode OFF).
-- Raises: INVALID_REQUEST, NOT_FOUND, QUEUE_FULL, ACCOUNT_NOT_FOUND, ACCOUNT_FROZEN, ACCOUNT_CLOSED,
-- CURRENCY_MISMATCH, INSUFFICIENT_FUNDS, DUPLICATE_REQUEST.
create or replace function pgwallet.enqueue_item(
    p_performer_id              bigint,
    p_user_id                   bigint,
    p_tokens                    bigint,
    p_title                     text,
    p_idempotency_key           text,
    p_queue_mode                text,
    p_source_feature            text,
    p_source_event_id           text,
    p_description               text,
    p_expected_duration_seconds integer,
    p_metadata                  jsonb)
returns pgwallet.queue_items
language plpgsql
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_queue     pgwallet.performer_queues;
    v_user      pgwallet.accounts;
    v_performer pgwallet.accounts;
    v_item      pgwallet.queue_items;
    v_hold      pgwallet.holds;
    v_split     record;
    v_open      integer;
begin
    perform pgwallet.check_request(p_tokens > 0, 'tokens', 'must be a positive whole number of tokens');
    perform pgwallet.check_request(length(p_title) between 1 and 200, 'title', 'must be 1 to 200 characters');
    perform pgwallet.check_request(p_queue_mode in ('ON', 'OFF'), 'queue_mode', 'must be ON or OFF');
    perform pgwallet.check_request(p_source_feature ~ '^[a-z][a-z0-9_]{0,62}$', 'source_feature',
                                   'must be a lower-case identifier');
    perform pgwallet.check_request(p_source_event_id is null or length(p_source_event_id) between 1 and 255,
                                   'source_event_id', 'must be 1 to 255 characters');
    perform pgwallet.check_request(p_description is null or length(p_description) <= 2000, 'description',
                                   'must be at most 2000 characters');
    perform pgwallet.check_request(p_expected_duration_seconds > 0, 'expected_duration_seconds',
                                   'must be a positive number of seconds');
    perform pgwallet.check_request(jsonb_typeof(p_metadata) = 'object', 'metadata', 'must be a JSON object');
    perform pgwallet.check_request(p_user_id is distinct from p_performer_id, 'user_id',
                                   'must differ from performer_id');
    -- the item's own key, unique forever: callers of other scopes (a purchase's 'tip_grid/<key>') wait here
    perform pg_catalog.pg_advisory_xact_lock(1885828980, pg_catalog.hashtext('queue_items/' || p_idempotency_key));
    if exists (select 1 from pgwallet.queue_items where idempotency_key = p_idempotency_key) then
        -- the idempotency key expired, but the item it made is still there: a new request needs a new key
        perform pgwallet.raise_error('DUPLICATE_REQUEST',
            pg_catalog.format('key %s already made a queue item', p_idempotency_key), 'idempotency_key',
            'use a new key for a new request');
    end if;
    if p_queue_mode = 'ON' then
        select * into v_queue from pgwallet.performer_queues where performer_id = p_performer_id
        for no key update;
    else
        select * into v_queue from pgwallet.performer_queues where performer_id = p_performer_id;
    end if;
    if not found then
        perform pgwallet.raise_error('NOT_FOUND',
            pg_catalog.format('performer %s has no queue (configure_performer_queue)', p_performer_id),
            'performer_id');
    end if;
    if p_queue_mode = 'ON' then
        select count(*) into v_open from pgwallet.queue_items
        where performer_id = p_performer_id and status in ('CREATED', 'STARTED');
        if v_open >= v_queue.max_open then
            perform pgwallet.raise_error('QUEUE_FULL',
                pg_catalog.format('performer %s has %s open items, at most %s', p_performer_id, v_open,
                                  v_queue.max_open), 'performer_id', 'try again when the queue is shorter');
        end if;
    end if;
    -- the checks place_hold makes, with this call's field names; the lock makes them hold until commit
    select * into v_user from pgwallet.accounts where id = p_user_id for update;
    if not found then
        perform pgwallet.raise_error('ACCOUNT_NOT_FOUND', pg_catalog.format('account %s', p_user_id), 'user_id');
    end if;
    select * into v_performer from pgwallet.accounts where id = p_performer_id;
    perform pgwallet.check_request(not v_user.collector, 'user_id', 'must be an ordinary account');
    if v_user.status <> 'active' or v_performer.status <> 'active' then
        perform pgwallet.raise_error(case when v_user.status = 'closed' or v_performer.status = 'closed'
                                          then 'ACCOUNT_CLOSED' else 'ACCOUNT_FROZEN' end,
            pg_catalog.format('account %s is %s, account %s is %s', v_user.id, v_user.status,
                              v_performer.id, v_performer.status),
            case when v_user.status <> 'active' then 'user_id' else 'performer_id' end);
    end if;
    if v_user.currency <> v_performer.currency then
        perform pgwallet.raise_error('CURRENCY_MISMATCH',
            pg_catalog.format('account %s holds %s, account %s holds %s', v_user.id, v_user.currency,
                              v_performer.id, v_performer.currency), 'user_id');
    end if;
    if not v_user.allow_negative and v_user.balance - v_user.held < p_tokens then
        perform pgwallet.raise_error('INSUFFICIENT_FUNDS',
            pg_catalog.format('account %s has %s available, %s requested', v_user.id,
                              pgwallet.money(v_user.balance - v_user.held, v_user.currency),
                              pgwallet.money(p_tokens, v_user.currency)), 'user_id');
    end if;

    v_item.id := nextval('pgwallet.queue_items_id_seq');
    -- the queue's own escrow (domain 'queue'): no public call settles it, and it needs no key of its own
    v_hold := pgwallet.hold_funds(p_user_id, p_performer_id, p_tokens, null,
                                  jsonb_build_object('queue_item_id', v_item.id), 'queue', false);
    v_item.idempotency_key := p_idempotency_key;
    v_item.source_feature := p_source_feature;
    v_item.source_event_id := p_source_event_id;
    v_item.performer_id := p_performer_id;
    v_item.user_id := p_user_id;
    v_item.hold_id := v_hold.id;
    v_item.tokens := p_tokens;
    v_item.fee_account_id := v_queue.fee_account_id;
    v_item.fee := floor(p_tokens::numeric * v_queue.fee_bps / 10000)::bigint;
    v_item.title := p_title;
    v_item.description := p_description;
    v_item.expected_duration_seconds := p_expected_duration_seconds;
    v_item.metadata := p_metadata;
    v_item.created_at := now();
    v_item.updated_at := now();
    if p_queue_mode = 'ON' then
        update pgwallet.performer_queues set next_ticket = next_ticket + 1
        where performer_id = p_performer_id
        returning next_ticket - 1 into v_item.ticket;
        v_item.status := 'CREATED';
        v_item.pass_through := false;
        v_item.settled := false;
    else
        v_split := pgwallet.capture_hold_split(v_item.hold_id, v_item.fee_account_id, v_item.fee, 'queue_item',
                                               jsonb_build_object('queue_item_id', v_item.id,
                                                                  'source_feature', p_source_feature), 'queue');
        v_item.status := 'FINISHED';
        v_item.pass_through := true;
        v_item.started_at := now();
        v_item.finished_at := now();
        v_item.settled := true;
        v_item.settled_at := now();
        v_item.settlement_transfer_id := v_split.transfer_ids[1];
        v_item.fee_transfer_id := v_split.transfer_ids[2];
    end if;
    insert into pgwallet.queue_items select (v_item).*;
    perform pgwallet.notify_queue_item(v_item, null);
    return v_item;
end
$$;

-- create_queue_item: a paid request to a performer, once per idempotency key: holds p_tokens on the user's
-- wallet and creates the item in one transaction. p_queue_mode ON (default): FIFO per performer, at most
-- max_open open items (QUEUE_FULL); OFF: pass-through, the item starts, finishes and settles at once.
-- Locks: see enqueue_item. Raises: INVALID_REQUEST, NOT_FOUND, QUEUE_FULL, ACCOUNT_NOT_FOUND, ACCOUNT_FROZEN,
-- ACCOUNT_CLOSED, CURRENCY_MISMATCH, INSUFFICIENT_FUNDS, DUPLICATE_REQUEST.
create or replace function pgwallet.create_queue_item(
    p_performer_id              bigint,
    p_user_id                   bigint,
    p_tokens                    bigint,
    p_title                     text,
    p_idempotency_key           text,
    p_queue_mode                text default 'ON',
    p_source_feature            text default 'direct',
    p_source_event_id           text default null,
    p_description               text default null,
    p_expected_duration_seconds integer default 60,
    p_metadata                  jsonb default '{}',
    p_acting_user               text default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_request  jsonb;
    v_response jsonb;
    v_item     pgwallet.queue_items;
begin
    p_queue_mode := coalesce(p_queue_mode, 'ON');
    p_source_feature := coalesce(p_source_feature, 'direct');
    p_expected_duration_seconds := coalesce(p_expected_duration_seconds, 60);
    p_metadata := coalesce(p_metadata, '{}');
    perform pgwallet.check_metadata(p_metadata);
    perform pgwallet.check_request(p_idempotency_key not like 'tip_grid/%', 'idempotency_key',
                                   'keys beginning tip_grid/ belong to tip-grid purchases');
    perform pgwallet.require_owner(p_user_id, p_acting_user, 'user_id');
    v_request := jsonb_build_object(
        'performer_id', p_performer_id, 'user_id', p_user_id, 'tokens', p_tokens, 'title', p_title,
        'queue_mode', p_queue_mode, 'source_feature', p_source_feature, 'source_event_id', p_source_event_id,
        'description', p_description, 'expected_duration_seconds', p_expected_duration_seconds,
        'metadata', p_metadata);
    v_response := pgwallet.claim_idempotency_key('create_queue_item', p_idempotency_key, v_request);
    if v_response is not null then
        return v_response;
    end if;
    v_item := pgwallet.enqueue_item(p_performer_id, p_user_id, p_tokens, p_title, p_idempotency_key, p_queue_mode,
                                    p_source_feature, p_source_event_id, p_description,
                                    p_expected_duration_seconds, p_metadata);
    -- a statement of its own: the position is counted on a snapshot that sees the new item
    v_response := pgwallet.queue_item_json(v_item);
    return pgwallet.complete_idempotency_key('create_queue_item', p_idempotency_key, v_request, v_response);
end
$$;

-- lock_queue_item: the queue item p_item_id, locked. Locks: the item row. Raises: NOT_FOUND.
create or replace function pgwallet.lock_queue_item(p_item_id bigint)
returns pgwallet.queue_items
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_item pgwallet.queue_items;
begin
    select * into v_item from pgwallet.queue_items where id = p_item_id for update;
    if not found then
        perform pgwallet.raise_error('NOT_FOUND', pg_catalog.format('queue item %s', p_item_id), 'item_id');
    end if;
    return v_item;
end
$$;

-- settle_purchased_item: the tip-grid purchase behind queue item p_item (if any) follows it, once: SUCCESS
-- (settled, notified on channel purchased_item_success) when the item finished, REFUNDED when it was
-- abandoned or refunded. Internal. Locks: the purchased item row. Raises: nothing.
create or replace function pgwallet.settle_purchased_item(p_item pgwallet.queue_items)
returns void
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_bought pgwallet.purchased_items;
begin
    update pgwallet.purchased_items
    set status = case when p_item.status = 'FINISHED' then 'SUCCESS' else 'REFUNDED' end,
        settled = p_item.status = 'FINISHED',
        settled_at = case when p_item.status = 'FINISHED' then now() end,
        notified_at = case when p_item.status = 'FINISHED' then now() end,
        refunded_at = case when p_item.status <> 'FINISHED' then now() end
    where queue_item_id = p_item.id and status = 'PENDING' and p_item.status in ('FINISHED', 'ABANDONED', 'REFUNDED')
    returning * into v_bought;
    if found and v_bought.status = 'SUCCESS' then
        perform pgwallet.send_queue_event('purchased_item_success', jsonb_build_object(
            'purchased_item_id', v_bought.id, 'queue_item_id', v_bought.queue_item_id,
            'user_id', v_bought.user_id, 'performer_id', v_bought.performer_id,
            'tip_menu_item_id', v_bought.tip_menu_item_id, 'title', v_bought.title, 'price', v_bought.price,
            'execution_mode', v_bought.execution_mode), true);
    end if;
end
$$;

-- start_item: CREATED -> STARTED; at most one STARTED item per performer. Locks: the performer's queue
-- row, then the item. Raises: NOT_FOUND, INVALID_STATE_TRANSITION, ALREADY_PROCESSING, DUPLICATE_REQUEST,
-- INVALID_REQUEST.
create or replace function pgwallet.start_item(p_item_id bigint, p_idempotency_key text)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_request   jsonb := jsonb_build_object('item_id', p_item_id);
    v_response  jsonb;
    v_performer bigint;
    v_item      pgwallet.queue_items;
    v_busy      bigint;
begin
    v_response := pgwallet.claim_idempotency_key('start_item', p_idempotency_key, v_request);
    if v_response is not null then
        return v_response;
    end if;
    select performer_id into v_performer from pgwallet.queue_items where id = p_item_id;
    if not found then
        perform pgwallet.raise_error('NOT_FOUND', pg_catalog.format('queue item %s', p_item_id), 'item_id');
    end if;
    perform 1 from pgwallet.performer_queues where performer_id = v_performer for no key update;
    v_item := pgwallet.lock_queue_item(p_item_id);
    if v_item.status <> 'CREATED' then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('queue item %s is %s: only a CREATED item starts', p_item_id, v_item.status),
            'item_id');
    end if;
    select id into v_busy from pgwallet.queue_items where performer_id = v_performer and status = 'STARTED';
    if found then
        perform pgwallet.raise_error('ALREADY_PROCESSING',
            pg_catalog.format('performer %s is performing queue item %s', v_performer, v_busy), 'item_id',
            'finish or abandon the started item first');
    end if;
    update pgwallet.queue_items set status = 'STARTED', started_at = now(), updated_at = now() where id = p_item_id
    returning * into v_item;
    perform pgwallet.notify_queue_item(v_item, 'CREATED');
    return pgwallet.complete_idempotency_key('start_item', p_idempotency_key, v_request,
                                             pgwallet.queue_item_json(v_item));
end
$$;

-- complete_item: STARTED -> FINISHED: captures the hold to the performer and passes the fee on to the fee
-- account, in one operation; a purchase behind the item succeeds. Racing abandon_item or refund_item, one
-- wins (the item lock), and the money moves once. Locks: the item, then see capture_hold_split.
-- Raises: NOT_FOUND, INVALID_STATE_TRANSITION, ACCOUNT_FROZEN, ACCOUNT_CLOSED, DUPLICATE_REQUEST,
-- INVALID_REQUEST.
create or replace function pgwallet.complete_item(p_item_id bigint, p_idempotency_key text)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_request  jsonb := jsonb_build_object('item_id', p_item_id);
    v_response jsonb;
    v_item     pgwallet.queue_items;
begin
    v_response := pgwallet.claim_idempotency_key('complete_item', p_idempotency_key, v_request);
    if v_response is not null then
        return v_response;
    end if;
    v_item := pgwallet.lock_queue_item(p_item_id);
    if v_item.status <> 'STARTED' then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('queue item %s is %s: only a STARTED item finishes', p_item_id, v_item.status),
            'item_id');
    end if;
    v_item := pgwallet.finish_queue_item(v_item);
    return pgwallet.complete_idempotency_key('complete_item', p_idempotency_key, v_request,
                                             pgwallet.queue_item_json(v_item));
end
$$;

-- finish_queue_item: p_item (locked by the caller, CREATED or STARTED) becomes FINISHED: its hold is captured
-- to the performer and the fee passed on to the fee account, in one operation; a purchase behind it
-- succeeds. Internal. Locks: see capture_hold_split. Raises: ACCOUNT_FROZEN, ACCOUNT_CLOSED.
create or replace function pgwallet.finish_queue_item(p_item pgwallet.queue_items)
returns pgwallet.queue_items
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_item  pgwallet.queue_items;
    v_split record;
begin
    v_split := pgwallet.capture_hold_split(p_item.hold_id, p_item.fee_account_id, p_item.fee, 'queue_item',
                                           jsonb_build_object('queue_item_id', p_item.id,
                                                              'source_feature', p_item.source_feature), 'queue');
    update pgwallet.queue_items
    set status = 'FINISHED', started_at = coalesce(started_at, now()), finished_at = now(), settled = true,
        settled_at = now(), updated_at = now(),
        settlement_transfer_id = v_split.transfer_ids[1], fee_transfer_id = v_split.transfer_ids[2]
    where id = p_item.id
    returning * into v_item;
    perform pgwallet.settle_purchased_item(v_item);
    perform pgwallet.notify_queue_item(v_item, p_item.status);
    return v_item;
end
$$;

-- complete_items: batch settlement: finishes several items of performer p_performer_id in one call (served
-- together), each CREATED or STARTED item paid as complete_item pays it, once; all of them or none. The
-- request is the set of ids (their order does not matter). Locks: the performer's queue row (start_item
-- waits), every item by ascending id, the accounts they pay between by ascending id, then per item its
-- hold (see capture_hold_split).
-- Raises: INVALID_REQUEST, NOT_FOUND, INVALID_STATE_TRANSITION, ACCOUNT_FROZEN, ACCOUNT_CLOSED,
-- DUPLICATE_REQUEST.
create or replace function pgwallet.complete_items(p_performer_id bigint, p_item_ids bigint[],
                                                   p_idempotency_key text)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_ids      bigint[];
    v_request  jsonb;
    v_response jsonb;
    v_item     pgwallet.queue_items;
    v_missing  bigint;
    v_done     jsonb := '[]';
begin
    perform pgwallet.check_request(p_performer_id is not null and p_performer_id > 0, 'performer_id',
                                   'must be a positive id');
    perform pgwallet.check_request(coalesce(cardinality(p_item_ids), 0) between 1 and 100, 'item_ids',
                                   'must list 1 to 100 queue items');
    select array_agg(distinct x order by x) into v_ids from unnest(p_item_ids) x;
    perform pgwallet.check_request(array_position(p_item_ids, null) is null and v_ids[1] > 0
                                   and cardinality(v_ids) = cardinality(p_item_ids), 'item_ids',
                                   'must list each queue item once, by its positive id');
    v_request := jsonb_build_object('performer_id', p_performer_id, 'item_ids', to_jsonb(v_ids));
    v_response := pgwallet.claim_idempotency_key('complete_items', p_idempotency_key, v_request);
    if v_response is not null then
        return v_response;
    end if;
    perform 1 from pgwallet.performer_queues where performer_id = p_performer_id for no key update;
    if not found then
        perform pgwallet.raise_error('NOT_FOUND', pg_catalog.format('performer queue %s', p_performer_id),
                                     'performer_id');
    end if;
    perform 1 from (select i.id from pgwallet.queue_items i where i.id = any(v_ids) order by i.id for update) l;
    select min(x) into v_missing from unnest(v_ids) x
    where not exists (select 1 from pgwallet.queue_items i where i.id = x);
    if v_missing is not null then
        perform pgwallet.raise_error('NOT_FOUND', pg_catalog.format('queue item %s', v_missing), 'item_ids');
    end if;
    -- every account the batch moves money between, by ascending id, before any moves: two batches (or a
    -- batch and single completions) whose items share users then never wait for each other in a cycle
    perform pgwallet.lock_accounts(array(select x.user_id from pgwallet.queue_items x where x.id = any (v_ids)
                                         union select x.fee_account_id from pgwallet.queue_items x
                                         where x.id = any (v_ids)
                                         union select p_performer_id));
    for v_item in select * from pgwallet.queue_items i where i.id = any(v_ids) order by i.id loop
        if v_item.performer_id <> p_performer_id then
            perform pgwallet.raise_error('INVALID_REQUEST', pg_catalog.format('item_ids: queue item %s is not in the '
                                         'queue of performer %s', v_item.id, p_performer_id), 'item_ids');
        end if;
        if v_item.status not in ('CREATED', 'STARTED') then
            perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
                pg_catalog.format('queue item %s is %s: only CREATED or STARTED items finish', v_item.id,
                                  v_item.status), 'item_ids');
        end if;
        v_done := v_done || pgwallet.queue_item_json(pgwallet.finish_queue_item(v_item));
    end loop;
    return pgwallet.complete_idempotency_key('complete_items', p_idempotency_key, v_request,
        jsonb_build_object('performer_id', p_performer_id, 'items', v_done, 'replayed', false));
end
$$;

-- release_queue_item: p_item (locked by the caller, CREATED or STARTED) becomes p_status (ABANDONED or
-- REFUNDED) with p_reason: its hold is voided, so the user has the tokens back, and a purchase behind it is
-- marked refunded. Internal. Locks: the hold, then the user's account. Raises: nothing of its own.
create or replace function pgwallet.release_queue_item(p_item pgwallet.queue_items, p_status text, p_reason text)
returns pgwallet.queue_items
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_item pgwallet.queue_items;
begin
    perform pgwallet.release_hold(p_item.hold_id, 'queue');
    update pgwallet.queue_items
    set status = p_status, settled = true, settled_at = now(), refund_reason = p_reason, updated_at = now(),
        abandoned_at = case when p_status = 'ABANDONED' then now() end,
        refunded_at = case when p_status = 'REFUNDED' then now() end
    where id = p_item.id
    returning * into v_item;
    perform pgwallet.settle_purchased_item(v_item);
    perform pgwallet.notify_queue_item(v_item, p_item.status);
    return v_item;
end
$$;

-- give_back_item: the body of abandon_item and refund_item (p_scope names which): a CREATED or STARTED
-- item becomes ABANDONED or REFUNDED with p_reason, once per idempotency key; its hold is voided. Internal.
-- Locks: the item, then its hold and the user's account. Raises: NOT_FOUND, INVALID_STATE_TRANSITION,
-- DUPLICATE_REQUEST, INVALID_REQUEST.
create or replace function pgwallet.give_back_item(p_scope text, p_item_id bigint, p_reason text,
                                                   p_idempotency_key text)
returns jsonb
language plpgsql
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_request  jsonb := jsonb_build_object('item_id', p_item_id, 'reason', p_reason);
    v_status   text := case p_scope when 'abandon_item' then 'ABANDONED' else 'REFUNDED' end;
    v_response jsonb;
    v_item     pgwallet.queue_items;
begin
    v_response := pgwallet.claim_idempotency_key(p_scope, p_idempotency_key, v_request);
    if v_response is not null then
        return v_response;
    end if;
    v_item := pgwallet.lock_queue_item(p_item_id);
    if v_item.status = 'ABANDONED' and v_status = 'REFUNDED' then
        -- the seed's ABANDONED -> REFUNDED: abandoning gave the tokens back already, so nothing moves again
        update pgwallet.queue_items
        set status = 'REFUNDED', refunded_at = now(), updated_at = now(), refund_reason = coalesce(p_reason, refund_reason)
        where id = p_item_id
        returning * into v_item;
        perform pgwallet.notify_queue_item(v_item, 'ABANDONED');
        return pgwallet.complete_idempotency_key(p_scope, p_idempotency_key, v_request, pgwallet.queue_item_json(v_item));
    end if;
    if v_item.settled then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('queue item %s is %s, settled: only a CREATED or STARTED item becomes %s', p_item_id,
                              v_item.status, v_status), 'item_id');
    end if;
    v_item := pgwallet.release_queue_item(v_item, v_status, p_reason);
    return pgwallet.complete_idempotency_key(p_scope, p_idempotency_key, v_request, pgwallet.queue_item_json(v_item));
end
$$;

-- abandon_item: CREATED or STARTED -> ABANDONED with a reason; the hold is voided (the user is refunded).
-- Locks: the item, then its hold and the user's account. Raises: NOT_FOUND, INVALID_STATE_TRANSITION,
-- DUPLICATE_REQUEST, INVALID_REQUEST.
create or replace function pgwallet.abandon_item(p_item_id bigint, p_reason text, p_idempotency_key text)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_request(length(p_reason) between 1 and 500, 'reason', 'must be 1 to 500 characters');
    return pgwallet.give_back_item('abandon_item', p_item_id, p_reason, p_idempotency_key);
end
$$;

-- refund_item: any item not settled yet (CREATED or STARTED) -> REFUNDED, the reason optional; the hold is
-- voided. Locks: the item, then its hold and the user's account. Raises: NOT_FOUND,
-- INVALID_STATE_TRANSITION, DUPLICATE_REQUEST, INVALID_REQUEST.
create or replace function pgwallet.refund_item(p_item_id bigint, p_idempotency_key text,
                                                p_reason text default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_request(p_reason is null or length(p_reason) between 1 and 500, 'reason',
                                   'must be 1 to 500 characters');
    return pgwallet.give_back_item('refund_item', p_item_id, p_reason, p_idempotency_key);
end
$$;

-- expire_stale_queue_items: the sweep. Abandons up to p_limit CREATED items not started within their
-- performer's start timeout, and refunds STARTED items past expected duration x grace percent; their holds
-- are voided. Returns {"abandoned": n, "refunded": m}; run it until both are 0. Locks: those items
-- (skipping locked ones), then their holds, then the users' accounts by ascending id. Raises: INVALID_REQUEST.
create or replace function pgwallet.expire_stale_queue_items(p_limit integer default 1000)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_ids       bigint[];
    v_item      pgwallet.queue_items;
    v_abandoned integer := 0;
    v_refunded  integer := 0;
    v_skipped   bigint[] := '{}';
begin
    perform pgwallet.check_request(p_limit between 1 and 100000, 'limit', 'must be 1 to 100000');
    v_ids := array(
        select i.id
        from pgwallet.queue_items i
        join pgwallet.performer_queues q on q.performer_id = i.performer_id
        where i.status in ('CREATED', 'STARTED')
          and case when i.status = 'CREATED'
                   then i.created_at + make_interval(secs => q.start_timeout_seconds) <= now()
                   else i.started_at + make_interval(secs => i.expected_duration_seconds * q.grace_percent / 100.0)
                        <= now() end
        order by i.id
        limit p_limit
        for update of i skip locked);
    perform 1 from pgwallet.holds where id in (select hold_id from pgwallet.queue_items where id = any (v_ids))
    order by id for update;
    perform 1 from pgwallet.accounts where id in (select user_id from pgwallet.queue_items where id = any (v_ids))
    order by id for update;
    for v_item in select * from pgwallet.queue_items where id = any (v_ids) order by id loop
        begin  -- an item that cannot be released is skipped and reported, never rolls the batch back
            if v_item.status = 'CREATED' then
                perform pgwallet.release_queue_item(v_item, 'ABANDONED', 'not started in time (sweep)');
                v_abandoned := v_abandoned + 1;
            elsif v_item.status = 'STARTED' then
                perform pgwallet.release_queue_item(v_item, 'REFUNDED', 'overran its expected duration (sweep)');
                v_refunded := v_refunded + 1;
            end if;
        exception when others then
            raise warning 'pgwallet.expire_stale_queue_items: queue item % skipped (%: %)', v_item.id, sqlstate, sqlerrm;
            v_skipped := v_skipped || v_item.id;
        end;
    end loop;
    return jsonb_build_object('abandoned', v_abandoned, 'refunded', v_refunded, 'skipped', to_jsonb(v_skipped));
end
$$;

-- get_queue_item: one queue item with its live position. Locks nothing. Raises: NOT_FOUND.
create or replace function pgwallet.get_queue_item(p_item_id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_item pgwallet.queue_items;
begin
    select * into v_item from pgwallet.queue_items where id = p_item_id;
    if not found then
        perform pgwallet.raise_error('NOT_FOUND', pg_catalog.format('queue item %s', p_item_id), 'item_id');
    end if;
    return pgwallet.queue_item_json(v_item);
end
$$;

-- get_queue_position: an item's position (1 = being performed or next; null once it left the queue), the
-- open items of its performer, and the estimated wait from the durations before it. Locks nothing.
-- Raises: NOT_FOUND.
create or replace function pgwallet.get_queue_position(p_item_id bigint)
returns table (item_id bigint, performer_id bigint, status text, "position" integer, total_in_queue integer,
               estimated_wait_seconds bigint)
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_item pgwallet.queue_items;
begin
    select * into v_item from pgwallet.queue_items q where q.id = p_item_id;
    if not found then
        perform pgwallet.raise_error('NOT_FOUND', pg_catalog.format('queue item %s', p_item_id), 'item_id');
    end if;
    return query
    select v_item.id, v_item.performer_id, v_item.status, p."position", p.total_in_queue, p.estimated_wait_seconds
    from pgwallet.queue_position(v_item.performer_id, v_item.ticket, v_item.status) p;
end
$$;

-- get_queue_depth: how many items of a performer are open (waiting and started), and the most allowed.
-- Locks nothing. Raises: NOT_FOUND.
create or replace function pgwallet.get_queue_depth(p_performer_id bigint)
returns table (performer_id bigint, depth integer, waiting integer, started integer, max_open integer)
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_max integer;
begin
    select q.max_open into v_max from pgwallet.performer_queues q where q.performer_id = p_performer_id;
    if not found then
        perform pgwallet.raise_error('NOT_FOUND', pg_catalog.format('performer %s has no queue', p_performer_id),
                                     'performer_id');
    end if;
    return query
    select p_performer_id, count(*)::integer, (count(*) filter (where i.status = 'CREATED'))::integer,
           (count(*) filter (where i.status = 'STARTED'))::integer, v_max
    from pgwallet.queue_items i
    where i.performer_id = p_performer_id and i.status in ('CREATED', 'STARTED');
end
$$;

-- get_performer_queue: a performer's open items in queue order (the started item first, then by ticket),
-- each with its position and estimated wait. Locks nothing. Raises: NOT_FOUND.
create or replace function pgwallet.get_performer_queue(p_performer_id bigint)
returns table (item_id bigint, "position" integer, estimated_wait_seconds bigint, status text, ticket bigint,
               user_id bigint, tokens bigint, title text, source_feature text, expected_duration_seconds integer,
               created_at timestamptz, started_at timestamptz)
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    if not exists (select 1 from pgwallet.performer_queues q where q.performer_id = p_performer_id) then
        perform pgwallet.raise_error('NOT_FOUND', pg_catalog.format('performer %s has no queue', p_performer_id),
                                     'performer_id');
    end if;
    return query
    select o.id, (row_number() over w)::integer,
           (coalesce(sum(o.remaining) over w, 0) - o.remaining)::bigint,
           o.status, o.ticket, o.user_id, o.tokens, o.title, o.source_feature, o.expected_duration_seconds,
           o.created_at, o.started_at
    from (select i.*, ceil(case when i.status = 'STARTED'
                                then greatest(i.expected_duration_seconds - extract(epoch from now() - i.started_at), 0)
                                else i.expected_duration_seconds end)::bigint as remaining
          from pgwallet.queue_items i
          where i.performer_id = p_performer_id and i.status in ('CREATED', 'STARTED')) o
    window w as (order by o.status = 'STARTED' desc, o.ticket rows between unbounded preceding and current row)
    order by o.status = 'STARTED' desc, o.ticket;
end
$$;

-- get_user_queue_history: a user's queue items, newest first, p_limit from p_offset. Locks nothing.
-- Raises: INVALID_REQUEST, ACCOUNT_NOT_FOUND.
create or replace function pgwallet.get_user_queue_history(p_user_id bigint, p_limit integer default 50,
                                                           p_offset integer default 0)
returns table (item jsonb)
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_request(p_limit between 1 and 1000, 'limit', 'must be 1 to 1000');
    perform pgwallet.check_request(p_offset between 0 and 1000000, 'offset', 'must be 0 to 1000000');
    if not exists (select 1 from pgwallet.accounts where id = p_user_id) then
        perform pgwallet.raise_error('ACCOUNT_NOT_FOUND', pg_catalog.format('account %s', p_user_id), 'user_id');
    end if;
    return query
    select pgwallet.queue_item_json(i)
    from pgwallet.queue_items i
    where i.user_id = p_user_id
    order by i.id desc
    limit p_limit offset p_offset;
end
$$;

-- tip_menu_item_json: the public view of a tip menu item. Locks nothing.
create or replace function pgwallet.tip_menu_item_json(p_menu pgwallet.tip_menu_items)
returns jsonb
language sql
stable
set search_path = pgwallet, pg_temp
as $$
    select jsonb_build_object(
        'tip_menu_item_id', p_menu.id, 'performer_id', p_menu.performer_id, 'title', p_menu.title,
        'price', p_menu.price, 'expected_duration_seconds', p_menu.expected_duration_seconds,
        'active', p_menu.active, 'created_at', p_menu.created_at, 'updated_at', p_menu.updated_at)
$$;

-- create_tip_menu_item: adds an item (title, price in tokens) to a performer's tip grid. Locks nothing.
-- Raises: INVALID_REQUEST, NOT_FOUND.
create or replace function pgwallet.create_tip_menu_item(p_performer_id bigint, p_title text, p_price bigint,
                                                         p_expected_duration_seconds integer default 60,
                                                         p_active boolean default true)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_menu pgwallet.tip_menu_items;
begin
    perform pgwallet.check_request(length(p_title) between 1 and 200, 'title', 'must be 1 to 200 characters');
    perform pgwallet.check_request(p_price > 0, 'price', 'must be a positive whole number of tokens');
    perform pgwallet.check_request(p_expected_duration_seconds is null or p_expected_duration_seconds > 0,
                                   'expected_duration_seconds', 'must be a positive number of seconds');
    if not exists (select 1 from pgwallet.performer_queues where performer_id = p_performer_id) then
        perform pgwallet.raise_error('NOT_FOUND', pg_catalog.format('performer %s has no queue', p_performer_id),
                                     'performer_id');
    end if;
    insert into pgwallet.tip_menu_items (performer_id, title, price, expected_duration_seconds, active)
    values (p_performer_id, p_title, p_price, coalesce(p_expected_duration_seconds, 60), coalesce(p_active, true))
    returning * into v_menu;
    return pgwallet.tip_menu_item_json(v_menu);
end
$$;

-- set_tip_menu_item_active: shows or hides a tip menu item (purchases need an active one).
-- Locks: the menu item row. Raises: NOT_FOUND.
create or replace function pgwallet.set_tip_menu_item_active(p_tip_menu_item_id bigint, p_active boolean)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_menu pgwallet.tip_menu_items;
begin
    perform pgwallet.check_request(p_active is not null, 'active', 'is required');
    update pgwallet.tip_menu_items set active = p_active, updated_at = now() where id = p_tip_menu_item_id
    returning * into v_menu;
    if not found then
        perform pgwallet.raise_error('NOT_FOUND', pg_catalog.format('tip menu item %s', p_tip_menu_item_id),
                                     'tip_menu_item_id');
    end if;
    return pgwallet.tip_menu_item_json(v_menu);
end
$$;

-- get_tip_menu: a performer's tip grid (active and inactive items), by id. Locks nothing. Raises: NOT_FOUND.
create or replace function pgwallet.get_tip_menu(p_performer_id bigint)
returns table (item jsonb)
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    if not exists (select 1 from pgwallet.performer_queues where performer_id = p_performer_id) then
        perform pgwallet.raise_error('NOT_FOUND', pg_catalog.format('performer %s has no queue', p_performer_id),
                                     'performer_id');
    end if;
    return query select pgwallet.tip_menu_item_json(m) from pgwallet.tip_menu_items m
                 where m.performer_id = p_performer_id order by m.id;
end
$$;

-- purchased_item_json: the public view of a tip-grid purchase, with its queue item's position.
-- Locks nothing.
create or replace function pgwallet.purchased_item_json(p_bought pgwallet.purchased_items)
returns jsonb
language sql
stable
set search_path = pgwallet, pg_temp
as $$
    select jsonb_build_object(
        'purchased_item_id', p_bought.id, 'queue_item_id', p_bought.queue_item_id, 'user_id', p_bought.user_id,
        'performer_id', p_bought.performer_id, 'tip_menu_item_id', p_bought.tip_menu_item_id,
        'title', p_bought.title, 'price', p_bought.price, 'execution_mode', p_bought.execution_mode,
        'status', p_bought.status, 'settled', p_bought.settled, 'settled_at', p_bought.settled_at,
        'notified_at', p_bought.notified_at, 'refunded_at', p_bought.refunded_at,
        'created_at', p_bought.created_at, 'position', p."position", 'total_in_queue', p.total_in_queue,
        'estimated_wait_seconds', p.estimated_wait_seconds,
        -- the seed's answer, in pgwallet's names: success, and what was bought for whom
        'success', p_bought.status <> 'REFUNDED', 'type', 'tip_grid', 'target', p_bought.performer_id,
        'replayed', false)
    from pgwallet.queue_items i
    cross join lateral pgwallet.queue_position(i.performer_id, i.ticket, i.status) p
    where i.id = p_bought.queue_item_id
$$;

-- purchase_tip_grid_item: a user buys an active item of the performer's tip grid, once per idempotency key.
-- IMMEDIATE (default): a pass-through queue item pays the performer at once; the purchase is SUCCESS and
-- notified on channel purchased_item_success. QUEUED: the tokens wait in the performer's queue; the purchase
-- is PENDING until its queue item finishes (SUCCESS, notified) or is abandoned or refunded (REFUNDED).
-- Locks: see enqueue_item, then the purchase row. Raises: INVALID_REQUEST, NOT_FOUND, QUEUE_FULL,
-- ACCOUNT_NOT_FOUND, ACCOUNT_FROZEN, ACCOUNT_CLOSED, CURRENCY_MISMATCH, INSUFFICIENT_FUNDS, DUPLICATE_REQUEST.
create or replace function pgwallet.purchase_tip_grid_item(p_user_id bigint, p_performer_id bigint,
                                                           p_tip_menu_item_id bigint, p_execution_mode text,
                                                           p_idempotency_key text, p_acting_user text default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_request  jsonb;
    v_response jsonb;
    v_menu     pgwallet.tip_menu_items;
    v_item     pgwallet.queue_items;
    v_bought   pgwallet.purchased_items;
begin
    p_execution_mode := coalesce(p_execution_mode, 'IMMEDIATE');
    perform pgwallet.check_request(p_execution_mode in ('IMMEDIATE', 'QUEUED'), 'execution_mode',
                                   'must be IMMEDIATE or QUEUED');
    perform pgwallet.require_owner(p_user_id, p_acting_user, 'user_id');
    v_request := jsonb_build_object('user_id', p_user_id, 'performer_id', p_performer_id,
                                    'tip_menu_item_id', p_tip_menu_item_id, 'execution_mode', p_execution_mode);
    v_response := pgwallet.claim_idempotency_key('purchase_tip_grid_item', p_idempotency_key, v_request);
    if v_response is not null then
        return v_response;
    end if;
    select * into v_menu from pgwallet.tip_menu_items where id = p_tip_menu_item_id;
    if not found then
        perform pgwallet.raise_error('NOT_FOUND', pg_catalog.format('tip menu item %s', p_tip_menu_item_id),
                                     'tip_menu_item_id');
    end if;
    perform pgwallet.check_request(v_menu.performer_id = p_performer_id, 'tip_menu_item_id',
                                   pg_catalog.format('belongs to performer %s', v_menu.performer_id));
    perform pgwallet.check_request(v_menu.active, 'tip_menu_item_id', 'is not active');
    v_bought.id := nextval(pg_catalog.pg_get_serial_sequence('pgwallet.purchased_items', 'id'));
    v_item := pgwallet.enqueue_item(
        p_performer_id, p_user_id, v_menu.price, v_menu.title, 'tip_grid/' || p_idempotency_key,
        case p_execution_mode when 'QUEUED' then 'ON' else 'OFF' end, 'tip_grid', v_bought.id::text, null,
        v_menu.expected_duration_seconds, jsonb_build_object('tip_menu_item_id', v_menu.id,
                                                             'purchased_item_id', v_bought.id));
    insert into pgwallet.purchased_items (id, idempotency_key, user_id, performer_id, tip_menu_item_id, title,
                                          price, execution_mode, status, queue_item_id)
    values (v_bought.id, p_idempotency_key, p_user_id, p_performer_id, v_menu.id, v_menu.title, v_menu.price,
            p_execution_mode, 'PENDING', v_item.id);
    perform pgwallet.settle_purchased_item(v_item);  -- IMMEDIATE: the pass-through item has finished
    select * into v_bought from pgwallet.purchased_items where id = v_bought.id;
    return pgwallet.complete_idempotency_key('purchase_tip_grid_item', p_idempotency_key, v_request,
                                             pgwallet.purchased_item_json(v_bought));
end
$$;

-- get_purchased_item: one tip-grid purchase and its status. Locks nothing. Raises: NOT_FOUND.
create or replace function pgwallet.get_purchased_item(p_purchased_item_id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_bought pgwallet.purchased_items;
begin
    select * into v_bought from pgwallet.purchased_items where id = p_purchased_item_id;
    if not found then
        perform pgwallet.raise_error('NOT_FOUND', pg_catalog.format('purchased item %s', p_purchased_item_id),
                                     'purchased_item_id');
    end if;
    return pgwallet.purchased_item_json(v_bought);
end
$$;

-- What each role may call.
grant execute on function
    pgwallet.create_queue_item(bigint, bigint, bigint, text, text, text, text, text, text, integer, jsonb, text),
    pgwallet.start_item(bigint, text),
    pgwallet.complete_item(bigint, text),
    pgwallet.complete_items(bigint, bigint[], text),
    pgwallet.abandon_item(bigint, text, text),
    pgwallet.refund_item(bigint, text, text),
    pgwallet.get_queue_item(bigint),
    pgwallet.get_queue_position(bigint),
    pgwallet.get_queue_depth(bigint),
    pgwallet.get_performer_queue(bigint),
    pgwallet.get_user_queue_history(bigint, integer, integer),
    pgwallet.create_tip_menu_item(bigint, text, bigint, integer, boolean),
    pgwallet.set_tip_menu_item_active(bigint, boolean),
    pgwallet.get_tip_menu(bigint),
    pgwallet.purchase_tip_grid_item(bigint, bigint, bigint, text, text, text),
    pgwallet.get_purchased_item(bigint)
    to pgwallet_app;
grant execute on function pgwallet.configure_performer_queue(bigint, bigint, integer, integer, integer, integer)
    to pgwallet_staff;
grant execute on function
    pgwallet.expire_stale_queue_items(integer),
    pgwallet.relay_queue_events(integer)
    to pgwallet_worker;
