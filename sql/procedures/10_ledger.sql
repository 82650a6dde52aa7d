-- Ledger core: accounts, balanced transfers, two-phase holds, reads and invariants.
-- The only code that changes a balance is post_legs (transfers; one leg goes through its short path,
-- post_single_leg) and the hold functions (held).
-- Lock order, everywhere: domain rows, then holds, then ordinary accounts by ascending id, then
-- collector slots by ascending account id. Collector slots are taken with SKIP LOCKED, so a payer into
-- a shared revenue or fee account never waits for another payer.

-- Who may call what (the tiers of migration 0009; the README's matrix is generated from the grants):
-- public calls check their caller's rights here, domain procedures call the internal functions below,
-- which no caller tier may execute.
--   app      the user_* calls (an end user's own accounts), open_account, reads
--   staff    transfer, post_operation, place_hold, capture_hold, void_hold (any account, never one that
--            may go negative), account status, sweeps
--   admin    open_system_account, fund_account (the only public calls that debit an account that may go
--            negative: where money enters the ledger)

-- Signatures replaced by 0009's trust boundary.
drop function if exists pgwallet.open_account(text, text, text, boolean, boolean, jsonb);
drop function if exists pgwallet.post_legs(bigint, text, bigint[], bigint[], bigint[], jsonb, bigint, bigint);
drop function if exists pgwallet.post_single_leg(bigint, text, bigint, bigint, bigint, jsonb);
drop function if exists pgwallet.capture_hold_split(bigint, bigint, bigint, text, jsonb);
drop function if exists pgwallet.lock_open_hold(bigint, text);

-- reserved_metadata_keys: the metadata keys pgwallet's domains write on transfers and holds and read
-- back; a public call may not set them. Locks nothing.
create or replace function pgwallet.reserved_metadata_keys()
returns text[]
language sql
immutable
set search_path = pgwallet, pg_temp
as $$
    select array['queue_item_id', 'source_feature', 'card_id', 'point_of_sale', 'client_request_id',
                 'stripe_session_id', 'order_id', 'staff_id', 'checkpoint_id', 'payment_method', 'counted_amount',
                 'old_card_id', 'new_card_id', 'payout_method', 'payout_job_id', 'challenge_id', 'investment_id',
                 'dividend_id', 'product_id', 'job_id', 'nfc_uid', 'acting_user']
$$;

-- domain_transfer_kinds: the transfer kinds pgwallet's own procedures write, which the invariants and
-- the domains rely on; a public post_operation may not use them. Locks nothing.
create or replace function pgwallet.domain_transfer_kinds()
returns text[]
language sql
immutable
set search_path = pgwallet, pg_temp
as $$
    select array['transfer', 'user_transfer', 'funding', 'hold_capture', 'bar_order', 'bar_refund',
                 'stripe_recharge', 'checkpoint_recharge', 'drawer_close', 'card_replacement', 'card_cash_out',
                 'queue_item', 'payout', 'payout_fee', 'investment', 'dividend']
$$;

-- check_metadata: INVALID_REQUEST naming p_field unless p_metadata is a JSON object of at most 8 kB
-- with no reserved key (reserved_metadata_keys). For public entry points. Locks nothing.
create or replace function pgwallet.check_metadata(p_metadata jsonb, p_field text default 'metadata')
returns void
language plpgsql
set search_path = pgwallet, pg_temp
as $$
begin
    if jsonb_typeof(p_metadata) is distinct from 'object' or pg_catalog.pg_column_size(p_metadata) > 8192 then
        perform pgwallet.raise_error('INVALID_REQUEST', p_field || ': must be a JSON object of at most 8 kB', p_field);
    elsif p_metadata ?| pgwallet.reserved_metadata_keys() then
        perform pgwallet.raise_error('INVALID_REQUEST',
            p_field || ': may not set the keys pgwallet''s domains write: ' ||
            array_to_string(array(select k from jsonb_object_keys(p_metadata) k
                                  where k = any (pgwallet.reserved_metadata_keys()) order by k), ', '), p_field);
    end if;
end
$$;

-- check_movement: INVALID_REQUEST naming p_field unless p_amount is positive and at most the setting
-- movement_max. For public entry points. Locks nothing.
create or replace function pgwallet.check_movement(p_amount bigint, p_field text default 'amount')
returns void
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_max bigint := coalesce(pgwallet.setting('movement_max'), '9223372036854775807')::bigint;
begin
    if (p_amount between 1 and v_max) is not true then
        perform pgwallet.raise_error('INVALID_REQUEST',
            pg_catalog.format('%s: must be a positive whole number of minor units, at most %s (movement_max)',
                              p_field, v_max), p_field);
    end if;
end
$$;

-- require_owner: raises unless account p_account_id belongs to end user p_acting_user: INVALID_REQUEST for
-- a missing or malformed acting user, ACCOUNT_NOT_FOUND, FORBIDDEN (naming p_field). An account's owner
-- never changes, so nothing is locked.
create or replace function pgwallet.require_owner(p_account_id bigint, p_acting_user text, p_field text)
returns void
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_owner text;
begin
    if (length(p_acting_user) between 1 and 200) is not true then
        perform pgwallet.raise_error('INVALID_REQUEST', 'acting_user: is required (1 to 200 characters)',
                                     'acting_user');
    end if;
    select a.owner into v_owner from pgwallet.accounts a where a.id = p_account_id;
    if not found then
        perform pgwallet.raise_error('ACCOUNT_NOT_FOUND', pg_catalog.format('account %s', p_account_id), p_field);
    end if;
    if v_owner is distinct from p_acting_user then
        perform pgwallet.raise_error('FORBIDDEN',
            pg_catalog.format('account %s does not belong to user %s', p_account_id, p_acting_user), p_field);
    end if;
end
$$;

-- create_account: opens an account of any kind; the body of open_account and open_system_account, and
-- how domains open their own accounts. A collector account (default for revenue, fees and clearing) keeps
-- its balance in slots. Internal. Locks nothing. Raises: INVALID_REQUEST.
create or replace function pgwallet.create_account(
    p_currency       text,
    p_kind           text,
    p_name           text default null,
    p_allow_negative boolean default null,
    p_collector      boolean default null,
    p_metadata       jsonb default '{}',
    p_owner          text default null)
returns jsonb
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_collector boolean := coalesce(p_collector, p_kind in ('revenue', 'fees', 'clearing'));
    v_slots     smallint := case when v_collector
                                 then coalesce(pgwallet.setting('collector_slots'), '64')::smallint
                                 else 0 end;
    v_id        bigint;
begin
    p_metadata := coalesce(p_metadata, '{}');
    perform pgwallet.check_request(exists (select 1 from pgwallet.currencies where code = p_currency),
                                   'currency', 'must be a known currency code');
    perform pgwallet.check_request(p_kind in ('card', 'user_wallet', 'performer', 'merchant', 'revenue', 'fees',
                                              'clearing', 'cash_drawer', 'escrow', 'pool', 'system'),
                                   'kind', 'must be a known account kind');
    perform pgwallet.check_request(p_name is null or length(p_name) between 1 and 200, 'name',
                                   'must be 1 to 200 characters');
    perform pgwallet.check_request(jsonb_typeof(p_metadata) = 'object', 'metadata', 'must be a JSON object');
    perform pgwallet.check_request(p_owner is null or length(p_owner) between 1 and 200, 'owner',
                                   'must be 1 to 200 characters');
    insert into pgwallet.accounts (currency, kind, name, allow_negative, collector, slot_count, metadata, owner)
    values (p_currency, p_kind, p_name, coalesce(p_allow_negative, p_kind in ('clearing', 'system')),
            v_collector, v_slots, p_metadata, p_owner)
    returning id into v_id;
    if v_collector then
        insert into pgwallet.account_slots (account_id, slot)
        select v_id, s from generate_series(0, v_slots - 1) s;
    end if;
    return (select to_jsonb(b) || jsonb_build_object('owner', p_owner) from pgwallet.account_balances b
            where b.id = v_id);
end
$$;

-- open_account: opens an ordinary account, for end user p_owner when given (the user_* calls then debit it
-- only for that user). Never one that may go negative, nor of kind system or clearing: money enters the
-- ledger only through those, and opening them is an admin act (open_system_account). Locks nothing.
-- Raises: INVALID_REQUEST.
create or replace function pgwallet.open_account(
    p_currency  text,
    p_kind      text,
    p_name      text default null,
    p_collector boolean default null,
    p_metadata  jsonb default '{}',
    p_owner     text default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_request(p_kind is null or p_kind not in ('system', 'clearing'), 'kind',
                                   'system and clearing accounts are opened by an admin (open_system_account)');
    perform pgwallet.check_metadata(coalesce(p_metadata, '{}'));
    return pgwallet.create_account(p_currency, p_kind, p_name, false, p_collector, p_metadata, p_owner);
end
$$;

-- open_system_account: opens an account of any kind, which may go negative (p_allow_negative; by default
-- clearing and system accounts do): where money enters the ledger. Admin. Locks nothing.
-- Raises: INVALID_REQUEST.
create or replace function pgwallet.open_system_account(
    p_currency       text,
    p_kind           text,
    p_name           text default null,
    p_allow_negative boolean default null,
    p_collector      boolean default null,
    p_metadata       jsonb default '{}')
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_metadata(coalesce(p_metadata, '{}'));
    return pgwallet.create_account(p_currency, p_kind, p_name, p_allow_negative, p_collector, p_metadata);
end
$$;

-- set_account_status: freezes, unfreezes or closes an account (closed is final and needs a zero
-- balance and no open hold). Locks: the account row. Raises: INVALID_REQUEST, ACCOUNT_NOT_FOUND,
-- INVALID_STATE_TRANSITION.
create or replace function pgwallet.set_account_status(p_account_id bigint, p_status text)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_status text;
begin
    perform pgwallet.check_request(p_status in ('active', 'frozen', 'closed'), 'status',
                                   'must be active, frozen or closed');
    select status into v_status from pgwallet.accounts where id = p_account_id for update;
    if not found then
        perform pgwallet.raise_error('ACCOUNT_NOT_FOUND', pg_catalog.format('account %s', p_account_id),
                                     'account_id');
    end if;
    if v_status = 'closed' and p_status <> 'closed' then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION', 'a closed account stays closed', 'status');
    end if;
    if p_status = 'closed' and exists (select 1 from pgwallet.account_balances
                                       where id = p_account_id and (balance <> 0 or held <> 0)) then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
                                     'an account is closed only with a zero balance and no open hold', 'status');
    end if;
    update pgwallet.accounts set status = p_status, updated_at = now() where id = p_account_id;
    return (select to_jsonb(b) from pgwallet.account_balances b where b.id = p_account_id);
end
$$;

-- require_active_account: raises ACCOUNT_FROZEN or ACCOUNT_CLOSED, naming p_field, unless p_status (account
-- p_account_id's) is 'active'. Busy paths test the status first and call it only to raise. Locks nothing.
create or replace function pgwallet.require_active_account(p_account_id bigint, p_status text, p_field text)
returns void
language plpgsql
set search_path = pgwallet, pg_temp
as $$
begin
    if p_status is distinct from 'active' then
        perform pgwallet.raise_error(case p_status when 'frozen' then 'ACCOUNT_FROZEN' else 'ACCOUNT_CLOSED' end,
                                     pg_catalog.format('account %s is %s', p_account_id, p_status), p_field);
    end if;
end
$$;

-- require_debit_allowed: raises p_refusal (account p_account_id's debit refusal, a catalogue code such as
-- CARD_BLOCKED), naming p_field, unless it is null. Busy paths test the refusal first and call it only to
-- raise. Locks nothing.
create or replace function pgwallet.require_debit_allowed(p_account_id bigint, p_refusal text, p_field text)
returns void
language plpgsql
set search_path = pgwallet, pg_temp
as $$
begin
    if p_refusal is not null then
        perform pgwallet.raise_error(p_refusal, pg_catalog.format('account %s refuses debits', p_account_id), p_field);
    end if;
end
$$;

-- set_debit_refusal: makes account p_account_id refuse every debit with catalogue error p_code (null: debits
-- allowed again); credits still go through. For domains whose own object blocks an account's money (a
-- blocked card). Locks: the account row. Raises: ACCOUNT_NOT_FOUND; XX000 for a code not in the catalogue.
create or replace function pgwallet.set_debit_refusal(p_account_id bigint, p_code text)
returns void
language plpgsql
set search_path = pgwallet, pg_temp
as $$
begin
    if p_code is not null and not exists (select 1 from pgwallet.error_catalogue e where e.code = p_code) then
        raise exception 'pgwallet: error code % is not in pgwallet.error_catalogue', p_code using errcode = 'XX000';
    end if;
    update pgwallet.accounts set debit_refusal = p_code, updated_at = now() where id = p_account_id;
    if not found then
        perform pgwallet.raise_error('ACCOUNT_NOT_FOUND', pg_catalog.format('account %s', p_account_id),
                                     'account_id');
    end if;
end
$$;

-- claim_slot: one balance slot of collector p_account_id, locked for this transaction: the first
-- unlocked one from a random slot on, wrapping around; it waits only when every slot is busy.
-- Locks: one account_slots row. Raises: nothing.
create or replace function pgwallet.claim_slot(p_account_id bigint, p_slot_count smallint,
                                               out slot smallint, out balance bigint, out version bigint)
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_from smallint := floor(random() * p_slot_count)::smallint;
begin
    select s.slot, s.balance, s.version into slot, balance, version
    from pgwallet.account_slots s
    where s.account_id = p_account_id and s.slot >= v_from
    order by s.slot
    limit 1
    for update skip locked;
    if found then
        return;
    end if;
    select s.slot, s.balance, s.version into slot, balance, version
    from pgwallet.account_slots s
    where s.account_id = p_account_id and s.slot < v_from
    order by s.slot
    limit 1
    for update skip locked;
    if found then
        return;
    end if;
    select s.slot, s.balance, s.version into slot, balance, version
    from pgwallet.account_slots s
    where s.account_id = p_account_id and s.slot = v_from
    for update;
end
$$;

-- post_single_leg: post_legs' path for the commonest operation, one leg with no hold: the same checks, locks
-- and rows in three statements instead of seven. Returns nulls, having changed nothing, when the leg needs
-- the general path (two collectors, or money leaving a collector that must stay covered); post_legs has
-- checked the arguments. Locks: the ordinary accounts FOR UPDATE by ascending id, then one collector slot.
-- Raises: ACCOUNT_NOT_FOUND, ACCOUNT_FROZEN, ACCOUNT_CLOSED, the debit account's refusal, CURRENCY_MISMATCH,
-- INVALID_REQUEST (bigint range), INSUFFICIENT_FUNDS.
create or replace function pgwallet.post_single_leg(p_operation_id bigint, p_kind text, p_debit bigint,
                                                    p_credit bigint, p_amount bigint, p_metadata jsonb,
                                                    p_may_fund boolean,
                                                    out transfer_id bigint, out currency text)
language plpgsql
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    r      record;
    v_slot record;
begin
    perform 1 from pgwallet.accounts x where x.id in (p_debit, p_credit) and not x.collector order by x.id for update;
    -- both accounts as they are now (the ordinary ones are locked), and a free slot of the collector, if any
    select d.id is not null as d_found, d.currency, d.status as d_status, d.allow_negative as d_negative,
           d.collector as d_collector, d.balance as d_balance, d.held as d_held, d.version as d_version,
           d.debit_refusal, c.id is not null as c_found, c.currency as c_currency, c.status as c_status,
           c.collector as c_collector, c.balance as c_balance, c.version as c_version,
           coalesce(d.collector and (c.collector or not d.allow_negative), false) as general,
           d.allow_negative and not p_may_fund as funding,
           coalesce(s.account_id, case when d.collector then d.id when c.collector then c.id end) as slot_account,
           case when d.collector then d.slot_count else c.slot_count end as slot_count,
           s.slot, s.balance as slot_balance, s.version as slot_version
    into r
    from (select) z
    left join pgwallet.accounts d on d.id = p_debit
    left join pgwallet.accounts c on c.id = p_credit
    left join lateral (
        select y.account_id, y.slot, y.balance, y.version
        from pgwallet.account_slots y
        where y.account_id = case when d.collector and d.allow_negative and not c.collector then d.id
                                  when c.collector and not d.collector then c.id end
          and y.slot >= floor(random() * case when d.collector then d.slot_count else c.slot_count end)::smallint
        order by y.slot
        limit 1
        for update skip locked) s on true;
    if r.general then
        return;
    elsif not (r.d_found and r.c_found) then
        perform pgwallet.raise_error('ACCOUNT_NOT_FOUND',
            pg_catalog.format('account %s', case when r.d_found then p_credit else p_debit end),
            case when r.d_found then 'credit_account_id' else 'debit_account_id' end);
    elsif r.d_status <> 'active' or r.c_status <> 'active' then
        perform pgwallet.require_active_account(p_debit, r.d_status, 'debit_account_id');
        perform pgwallet.require_active_account(p_credit, r.c_status, 'credit_account_id');
    elsif r.debit_refusal is not null then
        perform pgwallet.require_debit_allowed(p_debit, r.debit_refusal, 'debit_account_id');
    elsif r.currency <> r.c_currency then
        perform pgwallet.raise_error('CURRENCY_MISMATCH',
            pg_catalog.format('account %s holds %s, account %s holds %s', p_debit, r.currency, p_credit, r.c_currency),
            'credit_account_id');
    elsif r.funding then
        perform pgwallet.raise_error('FORBIDDEN', pg_catalog.format(
            'account %s may go negative: only an admin moves money out of it (fund_account)', p_debit),
            'debit_account_id');
    end if;
    if r.slot_account is not null then
        if r.slot is null then  -- every slot from the random one on was busy
            select * into v_slot from pgwallet.claim_slot(r.slot_account, r.slot_count);
            r.slot := v_slot.slot;  r.slot_balance := v_slot.balance;  r.slot_version := v_slot.version;
        end if;
        if r.d_collector then
            r.d_balance := r.slot_balance;  r.d_version := r.slot_version;
        else
            r.c_balance := r.slot_balance;  r.c_version := r.slot_version;
        end if;
    end if;
    -- a collector's slots share the bigint range, so that the sum of its slots never overflows
    if r.d_balance < p_amount - (case when r.d_collector then 9223372036854775807 / r.slot_count
                                      else 9223372036854775807 end)
       or r.c_balance > (case when r.c_collector then 9223372036854775807 / r.slot_count
                              else 9223372036854775807 end) - p_amount then
        perform pgwallet.raise_error('INVALID_REQUEST', 'amount: would take a balance beyond the bigint range of minor units',
                                     'amount');
    elsif not r.d_negative and r.d_balance - r.d_held < p_amount then
        perform pgwallet.raise_error('INSUFFICIENT_FUNDS', pg_catalog.format('account %s has %s available, %s requested',
                                     p_debit, pgwallet.money(r.d_balance - r.d_held, r.currency),
                                     pgwallet.money(p_amount, r.currency)), 'debit_account_id');
    end if;
    transfer_id := nextval('pgwallet.transfers_id_seq');
    currency := r.currency;
    with t as (
        insert into pgwallet.transfers (id, operation_id, debit_account_id, credit_account_id, amount, currency, kind,
                                        metadata)
        values (transfer_id, p_operation_id, p_debit, p_credit, p_amount, r.currency, p_kind, p_metadata)
    ), e as (
        insert into pgwallet.entries (transfer_id, account_id, slot, amount, previous_balance, new_balance,
                                      account_version)
        values (transfer_id, p_debit, case when r.d_collector then r.slot end, -p_amount, r.d_balance,
                r.d_balance - p_amount, r.d_version + 1),
               (transfer_id, p_credit, case when r.c_collector then r.slot end, p_amount, r.c_balance,
                r.c_balance + p_amount, r.c_version + 1)
    ), a as (
        update pgwallet.accounts x
        set balance = x.balance + case when x.id = p_debit then -p_amount else p_amount end,
            version = x.version + 1, updated_at = now()
        where x.id in (p_debit, p_credit) and not x.collector
    )
    update pgwallet.account_slots y
    set balance = y.balance + case when r.d_collector then -p_amount else p_amount end, version = y.version + 1
    where y.account_id = r.slot_account and y.slot = r.slot;
end
$$;

-- lock_accounts: the ordinary accounts among p_account_ids FOR UPDATE, by ascending id, as post_legs takes
-- them (a collector is not locked: post_legs takes one of its slots). For a domain that moves money between
-- several of them in one transaction and must hold them all before the first move. Internal.
-- Locks: those accounts. Raises nothing.
create or replace function pgwallet.lock_accounts(p_account_ids bigint[])
returns void
language plpgsql
set search_path = pgwallet, pg_temp
as $$
begin
    perform 1 from pgwallet.accounts a where a.id = any (p_account_ids) and not a.collector order by a.id for update;
end
$$;

-- post_legs: posts the legs (p_debits[i] -> p_credits[i], p_amounts[i]) of one operation, atomically,
-- with an entry per side that keeps previous/new balance and version; returns the transfer ids and
-- the currency of each leg. With p_hold_id, leg 1 settles that hold and p_held_release leaves the
-- debit account's held amount. A procedure posts all its legs in one call; a single leg with no hold takes
-- post_single_leg's shorter path. Locks: ordinary accounts FOR UPDATE by ascending id, then one slot per
-- collector (all of its slots when money leaves a collector that must stay covered). Raises:
-- INVALID_REQUEST, ACCOUNT_NOT_FOUND, ACCOUNT_FROZEN, ACCOUNT_CLOSED, the debit account's refusal
-- (accounts.debit_refusal, e.g. CARD_BLOCKED; not for the capture of a hold, placed before),
-- CURRENCY_MISMATCH, INSUFFICIENT_FUNDS.
create or replace function pgwallet.post_legs(
    p_operation_id   bigint,
    p_kind           text,
    p_debits         bigint[],
    p_credits        bigint[],
    p_amounts        bigint[],
    p_metadata       jsonb default '{}',
    p_hold_id        bigint default null,
    p_held_release   bigint default 0,
    p_may_fund       boolean default true,
    out transfer_ids bigint[],
    out currencies   text[])
language plpgsql
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    n          integer := coalesce(array_length(p_amounts, 1), 0);
    -- one cell per account: an ordinary account row, or one slot of a collector
    c_id       bigint[] := '{}';
    c_currency text[] := '{}';
    c_status   text[] := '{}';
    c_negative boolean[] := '{}';
    c_slot     smallint[] := '{}';
    c_balance  bigint[] := '{}';
    c_total    bigint[] := '{}';      -- whole balance before, where a funds check needs it
    c_held     bigint[] := '{}';
    c_version  bigint[] := '{}';
    c_refusal  text[] := '{}';        -- the error an account's debits are refused with, if any
    c_cap      bigint[] := '{}';      -- the largest balance (and minus the smallest) a cell may reach
    c_net      bigint[];
    c_release  bigint[];
    e_transfer bigint[] := '{}';
    e_account  bigint[] := '{}';
    e_slot     smallint[] := '{}';
    e_amount   bigint[] := '{}';
    e_previous bigint[] := '{}';
    e_new      bigint[] := '{}';
    e_version  bigint[] := '{}';
    a          record;
    v_slot     record;
    v_id       bigint;
    v_missing  bigint;
    v_others   integer := 0;
    v_rand     double precision := random();
    v_ordinary integer;
    d          integer;
    c          integer;
    k          integer;
    v_field    text;
    v_rule     text;
    v_single   record;
begin
    if n not between 1 and 1000 or array_length(p_debits, 1) is distinct from n
       or array_length(p_credits, 1) is distinct from n then
        perform pgwallet.raise_error('INVALID_REQUEST', 'legs: must be 1 to 1000 legs', 'legs');
    end if;
    for i in 1 .. n loop
        if p_debits[i] is null then
            v_field := 'debit_account_id';  v_rule := 'is required';
        elsif p_credits[i] is null then
            v_field := 'credit_account_id'; v_rule := 'is required';
        elsif p_amounts[i] is null or p_amounts[i] <= 0 then
            v_field := 'amount';            v_rule := 'must be a positive whole number of minor units';
        elsif p_debits[i] = p_credits[i] then
            v_field := 'credit_account_id'; v_rule := 'must differ from debit_account_id';
        end if;
        if v_field is not null then
            perform pgwallet.raise_error('INVALID_REQUEST', v_field || ': ' || v_rule, v_field);
        end if;
    end loop;
    if n = 1 and p_hold_id is null and coalesce(p_held_release, 0) = 0 then
        v_single := pgwallet.post_single_leg(p_operation_id, p_kind, p_debits[1], p_credits[1], p_amounts[1],
                                             p_metadata, p_may_fund);
        if v_single.transfer_id is not null then
            transfer_ids := array[v_single.transfer_id];
            currencies := array[v_single.currency];
            return;
        end if;
    end if;

    for a in
        select x.id, x.currency, x.status, x.allow_negative, x.balance, x.held, x.version, x.debit_refusal
        from pgwallet.accounts x
        where x.id = any (p_debits || p_credits) and not x.collector
        order by x.id
        for update
    loop
        c_id := c_id || a.id;  c_currency := c_currency || a.currency;  c_status := c_status || a.status;
        c_negative := c_negative || a.allow_negative;  c_slot := c_slot || null::smallint;
        c_balance := c_balance || a.balance;  c_total := c_total || a.balance;  c_held := c_held || a.held;
        c_version := c_version || a.version;  c_refusal := c_refusal || a.debit_refusal;
        c_cap := c_cap || 9223372036854775807;
    end loop;
    v_ordinary := coalesce(array_length(c_id, 1), 0);

    -- the rest are collectors (or unknown); with a single one, its first free slot from a random one on is
    -- claimed in the same query
    foreach v_id in array p_debits || p_credits loop
        if array_position(c_id, v_id) is null and v_missing is distinct from v_id then
            v_others := v_others + 1;
            v_missing := v_id;
        end if;
    end loop;
    if v_others > 0 then
        for a in
            select x.id, x.currency, x.status, x.allow_negative, x.slot_count, x.debit_refusal,
                   not x.allow_negative and x.id = any (p_debits) as covered, s.slot, s.balance, s.version
            from pgwallet.accounts x
            left join lateral (
                select y.slot, y.balance, y.version
                from pgwallet.account_slots y
                where v_others = 1 and y.account_id = x.id
                  and y.slot >= floor(v_rand * x.slot_count)::smallint
                  and (x.allow_negative or x.id <> all (p_debits))
                order by y.slot
                limit 1
                for update skip locked) s on true
            where x.id = any (p_debits || p_credits) and x.collector
            order by x.id
        loop
            v_slot := a;
            if a.covered then
                -- money leaves and the whole balance must cover it: take every slot, in slot order
                perform 1 from pgwallet.account_slots y where y.account_id = a.id order by y.slot for update;
                select y.slot, y.balance, y.version into v_slot
                from pgwallet.account_slots y where y.account_id = a.id order by y.slot limit 1;
                c_total := c_total || (select sum(y.balance)::bigint from pgwallet.account_slots y
                                       where y.account_id = a.id);
            else
                if a.slot is null then
                    select * into v_slot from pgwallet.claim_slot(a.id, a.slot_count);
                end if;
                c_total := c_total || null::bigint;
            end if;
            c_id := c_id || a.id;  c_currency := c_currency || a.currency;  c_status := c_status || a.status;
            c_negative := c_negative || a.allow_negative;  c_held := c_held || 0::bigint;
            c_refusal := c_refusal || a.debit_refusal;
            c_cap := c_cap || 9223372036854775807 / a.slot_count;
            c_slot := c_slot || v_slot.slot;  c_balance := c_balance || v_slot.balance;
            c_version := c_version || v_slot.version;
        end loop;
    end if;

    c_net := array_fill(0::bigint, array[coalesce(array_length(c_id, 1), 0)]);
    c_release := c_net;
    transfer_ids := array(select nextval('pgwallet.transfers_id_seq') from generate_series(1, n));
    currencies := '{}';

    for i in 1 .. n loop
        d := array_position(c_id, p_debits[i]);
        c := array_position(c_id, p_credits[i]);
        if d is null or c is null then
            v_field := case when d is null then 'debit_account_id' else 'credit_account_id' end;
            perform pgwallet.raise_error('ACCOUNT_NOT_FOUND',
                pg_catalog.format('account %s', case when d is null then p_debits[i] else p_credits[i] end),
                v_field);
        end if;
        foreach k in array array[d, c] loop
            if c_status[k] <> 'active' then
                perform pgwallet.require_active_account(c_id[k], c_status[k],
                                                        case when k = d then 'debit_account_id' else 'credit_account_id' end);
            end if;
        end loop;
        if c_refusal[d] is not null and not (i = 1 and p_hold_id is not null) then  -- a hold's capture is owed
            perform pgwallet.require_debit_allowed(c_id[d], c_refusal[d], 'debit_account_id');
        end if;
        if c_currency[d] <> c_currency[c] then
            perform pgwallet.raise_error('CURRENCY_MISMATCH',
                pg_catalog.format('account %s holds %s, account %s holds %s',
                                  c_id[d], c_currency[d], c_id[c], c_currency[c]), 'credit_account_id');
        end if;
        if c_negative[d] and not p_may_fund then
            perform pgwallet.raise_error('FORBIDDEN', pg_catalog.format(
                'account %s may go negative: only an admin moves money out of it (fund_account)', c_id[d]),
                'debit_account_id');
        end if;
        currencies := currencies || c_currency[d];
        if i = 1 and p_held_release > 0 then
            c_release[d] := p_held_release;
        end if;
        if c_balance[d] < p_amounts[i] - c_cap[d] or c_balance[c] > c_cap[c] - p_amounts[i] then
            perform pgwallet.raise_error('INVALID_REQUEST',
                'amount: would take a balance beyond the bigint range of minor units', 'amount');
        end if;
        foreach k in array array[d, c] loop
            e_transfer := e_transfer || transfer_ids[i];
            e_account := e_account || c_id[k];
            e_slot := e_slot || c_slot[k];
            e_amount := e_amount || case when k = d then -p_amounts[i] else p_amounts[i] end;
            e_previous := e_previous || c_balance[k];
            c_balance[k] := c_balance[k] + e_amount[array_upper(e_amount, 1)];
            c_net[k] := c_net[k] + e_amount[array_upper(e_amount, 1)];
            c_version[k] := c_version[k] + 1;
            e_new := e_new || c_balance[k];
            e_version := e_version || c_version[k];
        end loop;
    end loop;

    for k in 1 .. coalesce(array_length(c_id, 1), 0) loop
        if not c_negative[k] and c_net[k] + c_release[k] < 0
           and c_total[k] + c_net[k] - (c_held[k] - c_release[k]) < 0 then
            perform pgwallet.raise_error('INSUFFICIENT_FUNDS',
                pg_catalog.format('account %s has %s available, %s requested', c_id[k],
                                  pgwallet.money(c_total[k] - c_held[k], c_currency[k]),
                                  pgwallet.money(-c_net[k], c_currency[k])),
                case when c_id[k] = any (p_debits) then 'debit_account_id' else 'credit_account_id' end);
        end if;
    end loop;

    insert into pgwallet.transfers (id, operation_id, debit_account_id, credit_account_id, amount, currency,
                                    hold_id, kind, metadata)
    select t.id, p_operation_id, t.debit, t.credit, t.amount, t.currency,
           case when t.ord = 1 then p_hold_id end, p_kind, p_metadata
    from unnest(transfer_ids, p_debits, p_credits, p_amounts, currencies)
         with ordinality as t(id, debit, credit, amount, currency, ord);

    insert into pgwallet.entries (transfer_id, account_id, slot, amount, previous_balance, new_balance,
                                  account_version)
    select * from unnest(e_transfer, e_account, e_slot, e_amount, e_previous, e_new, e_version);

    if v_ordinary > 0 then
        update pgwallet.accounts x
        set balance = x.balance + u.net, held = x.held - u.release, version = u.version, updated_at = now()
        from unnest(c_id[1:v_ordinary], c_net[1:v_ordinary], c_release[1:v_ordinary],
                    c_version[1:v_ordinary]) as u(id, net, release, version)
        where x.id = u.id;
    end if;
    if v_others > 0 then
        update pgwallet.account_slots x
        set balance = u.balance, version = u.version
        from unnest(c_id[v_ordinary + 1:], c_slot[v_ordinary + 1:], c_balance[v_ordinary + 1:],
                    c_version[v_ordinary + 1:]) as u(id, slot, balance, version)
        where x.account_id = u.id and x.slot = u.slot;
    end if;
end
$$;

-- transfer_request: the body of transfer, user_transfer and fund_account (p_scope and p_kind name which):
-- moves p_amount from one account to another, once per idempotency key. With p_may_fund false a debit of
-- an account that may go negative is FORBIDDEN. Internal. Locks: see post_legs. Raises: INVALID_REQUEST,
-- ACCOUNT_NOT_FOUND, ACCOUNT_FROZEN, ACCOUNT_CLOSED, the debit account's refusal, CURRENCY_MISMATCH,
-- INSUFFICIENT_FUNDS, FORBIDDEN, DUPLICATE_REQUEST.
create or replace function pgwallet.transfer_request(
    p_scope             text,
    p_kind              text,
    p_debit_account_id  bigint,
    p_credit_account_id bigint,
    p_amount            bigint,
    p_idempotency_key   text,
    p_metadata          jsonb,
    p_may_fund          boolean)
returns jsonb
language plpgsql
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_request  jsonb;
    v_response jsonb;
    v_op       bigint;
    v_posted   record;
begin
    p_metadata := coalesce(p_metadata, '{}');
    perform pgwallet.check_metadata(p_metadata);
    perform pgwallet.check_movement(p_amount);
    v_request := jsonb_build_object('debit_account_id', p_debit_account_id, 'credit_account_id',
                                    p_credit_account_id, 'amount', p_amount, 'metadata', p_metadata);
    v_response := pgwallet.claim_idempotency_key(p_scope, p_idempotency_key, v_request);
    if v_response is not null then
        return v_response;
    end if;
    v_op := nextval('pgwallet.operation_id_seq');
    v_posted := pgwallet.post_legs(v_op, p_kind, array[p_debit_account_id], array[p_credit_account_id],
                                   array[p_amount], p_metadata, null, 0, p_may_fund);
    v_response := jsonb_build_object(
        'operation_id', v_op, 'transfer_ids', to_jsonb(v_posted.transfer_ids), 'debit_account_id',
        p_debit_account_id, 'credit_account_id', p_credit_account_id, 'amount', p_amount,
        'currency', v_posted.currencies[1], 'created_at', now(), 'replayed', false);
    return pgwallet.complete_idempotency_key(p_scope, p_idempotency_key, v_request, v_response);
end
$$;

-- transfer: moves p_amount minor units from one account to another, once per idempotency key; never out
-- of an account that may go negative (that is fund_account). Staff. Locks: see post_legs.
-- Raises: as transfer_request.
create or replace function pgwallet.transfer(
    p_debit_account_id  bigint,
    p_credit_account_id bigint,
    p_amount            bigint,
    p_idempotency_key   text,
    p_metadata          jsonb default '{}')
returns jsonb
language sql
security definer
set search_path = pgwallet, pg_temp
as $$
    select pgwallet.transfer_request('transfer', 'transfer', p_debit_account_id, p_credit_account_id, p_amount,
                                     p_idempotency_key, p_metadata, false)
$$;

-- user_transfer: end user p_acting_user moves p_amount from an account of theirs to any account of the
-- same currency, once per idempotency key. App. Locks: see post_legs. Raises: FORBIDDEN (not their
-- account), and as transfer_request.
create or replace function pgwallet.user_transfer(
    p_acting_user       text,
    p_debit_account_id  bigint,
    p_credit_account_id bigint,
    p_amount            bigint,
    p_idempotency_key   text,
    p_metadata          jsonb default '{}')
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.require_owner(p_debit_account_id, p_acting_user, 'debit_account_id');
    return pgwallet.transfer_request('user_transfer', 'user_transfer', p_debit_account_id, p_credit_account_id,
                                     p_amount, p_idempotency_key, p_metadata, false);
end
$$;

-- fund_account: moves p_amount into p_credit_account_id out of any account, one that may go negative included:
-- how money enters the ledger (a funding source, a correction). Admin. Locks: see post_legs.
-- Raises: as transfer_request, FORBIDDEN aside.
create or replace function pgwallet.fund_account(
    p_debit_account_id  bigint,
    p_credit_account_id bigint,
    p_amount            bigint,
    p_idempotency_key   text,
    p_metadata          jsonb default '{}')
returns jsonb
language sql
security definer
set search_path = pgwallet, pg_temp
as $$
    select pgwallet.transfer_request('fund_account', 'funding', p_debit_account_id, p_credit_account_id, p_amount,
                                     p_idempotency_key, p_metadata, true)
$$;

-- post_operation: posts several legs [{debit_account_id, credit_account_id, amount}] as one balanced
-- operation (a purchase with its platform fee), all or nothing, once per idempotency key; its kind is not
-- one of the domains' (domain_transfer_kinds) and no leg debits an account that may go negative. Staff.
-- Locks: see post_legs. Raises: as transfer.
create or replace function pgwallet.post_operation(
    p_legs            jsonb,
    p_idempotency_key text,
    p_kind            text default 'operation',
    p_metadata        jsonb default '{}')
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_request  jsonb;
    v_response jsonb;
    v_op       bigint;
    v_posted   record;
    v_debits   bigint[];
    v_credits  bigint[];
    v_amounts  bigint[];
    v_max      bigint := coalesce(pgwallet.setting('movement_max'), '9223372036854775807')::bigint;
begin
    p_metadata := coalesce(p_metadata, '{}');
    p_kind := coalesce(p_kind, 'operation');
    perform pgwallet.check_request(jsonb_typeof(p_legs) = 'array' and jsonb_array_length(p_legs) between 1 and 1000,
                                   'legs', 'must be a JSON array of 1 to 1000 legs');
    perform pgwallet.check_request(not exists (
        select 1 from jsonb_array_elements(p_legs) l
        where jsonb_typeof(l) <> 'object'
           or jsonb_typeof(l -> 'debit_account_id') is distinct from 'number'
           or jsonb_typeof(l -> 'credit_account_id') is distinct from 'number'
           or jsonb_typeof(l -> 'amount') is distinct from 'number'
           or (l ->> 'amount') !~ '^[1-9][0-9]{0,17}$'
           or (l ->> 'debit_account_id') !~ '^[1-9][0-9]{0,17}$'
           or (l ->> 'credit_account_id') !~ '^[1-9][0-9]{0,17}$'
           or (l -> 'debit_account_id') = (l -> 'credit_account_id')),
        'legs', 'each leg is {debit_account_id, credit_account_id, amount}: positive whole numbers, two accounts');
    perform pgwallet.check_request(not exists (select 1 from jsonb_array_elements(p_legs) l
                                               where (l ->> 'amount')::bigint > v_max),
                                   'legs', pg_catalog.format('each amount is at most %s (movement_max)', v_max));
    perform pgwallet.check_request(p_kind ~ '^[a-z][a-z0-9_]{0,62}$', 'kind', 'must be a lower-case identifier');
    perform pgwallet.check_request(p_kind <> all (pgwallet.domain_transfer_kinds()), 'kind',
                                   'is a kind pgwallet''s own procedures write');
    perform pgwallet.check_metadata(p_metadata);
    v_request := jsonb_build_object('legs', p_legs, 'kind', p_kind, 'metadata', p_metadata);
    v_response := pgwallet.claim_idempotency_key('post_operation', p_idempotency_key, v_request);
    if v_response is not null then
        return v_response;
    end if;
    select array_agg((l ->> 'debit_account_id')::bigint order by o),
           array_agg((l ->> 'credit_account_id')::bigint order by o),
           array_agg((l ->> 'amount')::bigint order by o)
    into v_debits, v_credits, v_amounts
    from jsonb_array_elements(p_legs) with ordinality as x(l, o);
    v_op := nextval('pgwallet.operation_id_seq');
    v_posted := pgwallet.post_legs(v_op, p_kind, v_debits, v_credits, v_amounts, p_metadata, null, 0, false);
    v_response := jsonb_build_object('operation_id', v_op, 'transfer_ids', to_jsonb(v_posted.transfer_ids),
                                     'kind', p_kind,
                                     'legs', jsonb_array_length(p_legs), 'created_at', now(),
                                     'replayed', false);
    return pgwallet.complete_idempotency_key('post_operation', p_idempotency_key, v_request, v_response);
end
$$;

-- hold_json: the public view of a hold. Locks nothing.
create or replace function pgwallet.hold_json(p_hold pgwallet.holds)
returns jsonb
language sql
stable
set search_path = pgwallet, pg_temp
as $$
    select jsonb_build_object(
        'hold_id', p_hold.id, 'account_id', p_hold.account_id, 'credit_account_id', p_hold.credit_account_id,
        'amount', p_hold.amount, 'currency', p_hold.currency, 'status', p_hold.status,
        'captured_amount', p_hold.captured_amount,
        'released_amount', case when p_hold.status = 'open' then 0
                                else p_hold.amount - coalesce(p_hold.captured_amount, 0) end,
        'settlement_transfer_id', p_hold.settlement_transfer_id, 'expires_at', p_hold.expires_at,
        'created_at', p_hold.created_at, 'settled_at', p_hold.settled_at, 'replayed', false)
$$;

-- hold_funds: reserves p_amount on ordinary account p_account_id for a later capture to
-- p_credit_account_id; available shrinks, balance does not. p_domain marks a domain's own hold (the queue's
-- escrow), which only that domain settles. Internal: no idempotency key of its own (the caller's covers it).
-- Locks: the account row. Raises: INVALID_REQUEST, ACCOUNT_NOT_FOUND, ACCOUNT_FROZEN, ACCOUNT_CLOSED, the
-- account's debit refusal (e.g. CARD_BLOCKED), CURRENCY_MISMATCH, INSUFFICIENT_FUNDS, FORBIDDEN (an account
-- that may go negative, unless p_may_fund).
create or replace function pgwallet.hold_funds(
    p_account_id        bigint,
    p_credit_account_id bigint,
    p_amount            bigint,
    p_timeout_seconds   integer,
    p_metadata          jsonb,
    p_domain            text,
    p_may_fund          boolean)
returns pgwallet.holds
language plpgsql
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_account pgwallet.accounts;
    v_credit  pgwallet.accounts;
    v_hold    pgwallet.holds;
begin
    select * into v_credit from pgwallet.accounts where id = p_credit_account_id;
    if not found then
        perform pgwallet.raise_error('ACCOUNT_NOT_FOUND', pg_catalog.format('account %s', p_credit_account_id),
                                     'credit_account_id');
    end if;
    select * into v_account from pgwallet.accounts where id = p_account_id for update;
    if not found then
        perform pgwallet.raise_error('ACCOUNT_NOT_FOUND', pg_catalog.format('account %s', p_account_id),
                                     'account_id');
    end if;
    perform pgwallet.check_request(not v_account.collector, 'account_id',
                                   'holds are placed on ordinary accounts, not on collector accounts');
    if v_account.status <> 'active' or v_credit.status <> 'active' then
        perform pgwallet.raise_error(case when 'closed' in (v_account.status, v_credit.status)
                                          then 'ACCOUNT_CLOSED' else 'ACCOUNT_FROZEN' end,
            pg_catalog.format('account %s is %s, account %s is %s', v_account.id, v_account.status,
                              v_credit.id, v_credit.status),
            case when v_account.status <> 'active' then 'account_id' else 'credit_account_id' end);
    end if;
    perform pgwallet.require_debit_allowed(v_account.id, v_account.debit_refusal, 'account_id');
    if v_account.currency <> v_credit.currency then
        perform pgwallet.raise_error('CURRENCY_MISMATCH',
            pg_catalog.format('account %s holds %s, account %s holds %s', v_account.id, v_account.currency,
                              v_credit.id, v_credit.currency), 'credit_account_id');
    end if;
    if v_account.allow_negative and not p_may_fund then
        perform pgwallet.raise_error('FORBIDDEN', pg_catalog.format(
            'account %s may go negative: only an admin moves money out of it (fund_account)', v_account.id),
            'account_id');
    end if;
    if not v_account.allow_negative and v_account.balance - v_account.held < p_amount then
        perform pgwallet.raise_error('INSUFFICIENT_FUNDS',
            pg_catalog.format('account %s has %s available, %s requested', v_account.id,
                              pgwallet.money(v_account.balance - v_account.held, v_account.currency),
                              pgwallet.money(p_amount, v_account.currency)), 'account_id');
    end if;
    update pgwallet.accounts set held = held + p_amount, updated_at = now() where id = p_account_id;
    insert into pgwallet.holds (account_id, credit_account_id, amount, currency, expires_at, metadata, domain)
    values (p_account_id, p_credit_account_id, p_amount, v_account.currency,
            now() + make_interval(secs => p_timeout_seconds), p_metadata, p_domain)
    returning * into v_hold;
    return v_hold;
end
$$;

-- hold_request: the body of place_hold and user_place_hold (p_scope names which): checks the request,
-- then hold_funds once per idempotency key. Internal. Locks: the account row. Raises: as hold_funds,
-- DUPLICATE_REQUEST.
create or replace function pgwallet.hold_request(
    p_scope             text,
    p_account_id        bigint,
    p_credit_account_id bigint,
    p_amount            bigint,
    p_idempotency_key   text,
    p_timeout_seconds   integer,
    p_metadata          jsonb)
returns jsonb
language plpgsql
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_request  jsonb;
    v_response jsonb;
begin
    p_metadata := coalesce(p_metadata, '{}');
    perform pgwallet.check_movement(p_amount);
    perform pgwallet.check_request(p_timeout_seconds is null or p_timeout_seconds > 0, 'timeout_seconds',
                                   'must be a positive number of seconds');
    perform pgwallet.check_request(p_account_id is distinct from p_credit_account_id, 'credit_account_id',
                                   'must differ from account_id');
    perform pgwallet.check_metadata(p_metadata);
    v_request := jsonb_build_object('account_id', p_account_id, 'credit_account_id', p_credit_account_id,
                                    'amount', p_amount, 'timeout_seconds', p_timeout_seconds,
                                    'metadata', p_metadata);
    v_response := pgwallet.claim_idempotency_key(p_scope, p_idempotency_key, v_request);
    if v_response is not null then
        return v_response;
    end if;
    return pgwallet.complete_idempotency_key(p_scope, p_idempotency_key, v_request, pgwallet.hold_json(
        pgwallet.hold_funds(p_account_id, p_credit_account_id, p_amount, p_timeout_seconds, p_metadata, null, false)));
end
$$;

-- place_hold: reserves p_amount on an ordinary account (never one that may go negative) for a later
-- capture to p_credit_account_id (escrow), once per idempotency key; expires after p_timeout_seconds if
-- given. Staff. Locks: the account row. Raises: as hold_funds, DUPLICATE_REQUEST.
create or replace function pgwallet.place_hold(
    p_account_id        bigint,
    p_credit_account_id bigint,
    p_amount            bigint,
    p_idempotency_key   text,
    p_timeout_seconds   integer default null,
    p_metadata          jsonb default '{}')
returns jsonb
language sql
security definer
set search_path = pgwallet, pg_temp
as $$
    select pgwallet.hold_request('place_hold', p_account_id, p_credit_account_id, p_amount, p_idempotency_key,
                                 p_timeout_seconds, p_metadata)
$$;

-- user_place_hold: place_hold on an account of end user p_acting_user. App. Locks: the account row.
-- Raises: FORBIDDEN (not their account), as place_hold.
create or replace function pgwallet.user_place_hold(
    p_acting_user       text,
    p_account_id        bigint,
    p_credit_account_id bigint,
    p_amount            bigint,
    p_idempotency_key   text,
    p_timeout_seconds   integer default null,
    p_metadata          jsonb default '{}')
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.require_owner(p_account_id, p_acting_user, 'account_id');
    return pgwallet.hold_request('user_place_hold', p_account_id, p_credit_account_id, p_amount,
                                 p_idempotency_key, p_timeout_seconds, p_metadata);
end
$$;

-- lock_open_hold: the hold p_hold_id, locked, checked to be open, settled by its own kind of call (a
-- domain's hold only by that domain, p_domain; a hold paid in parts only by its payout) and, for a
-- capture, not past expires_at. Locks: the hold row. Raises: HOLD_NOT_FOUND, INVALID_STATE_TRANSITION,
-- HOLD_EXPIRED.
create or replace function pgwallet.lock_open_hold(p_hold_id bigint, p_action text, p_domain text default null)
returns pgwallet.holds
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_hold pgwallet.holds;
begin
    select * into v_hold from pgwallet.holds where id = p_hold_id for update;
    if not found then
        perform pgwallet.raise_error('HOLD_NOT_FOUND', pg_catalog.format('hold %s', p_hold_id), 'hold_id');
    end if;
    if v_hold.status <> 'open' then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('hold %s is %s: it cannot be %s', p_hold_id, v_hold.status, p_action), 'hold_id');
    end if;
    if v_hold.domain is distinct from p_domain then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('hold %s is the escrow of a %s item: only the %s settles it', p_hold_id, v_hold.domain,
                              v_hold.domain), 'hold_id', 'finish, abandon or refund the item');
    end if;
    if v_hold.credit_account_id = v_hold.account_id then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('hold %s is paid out in parts: only its payout settles it', p_hold_id), 'hold_id');
    end if;
    if p_action = 'captured' and v_hold.expires_at <= now() then
        perform pgwallet.raise_error('HOLD_EXPIRED',
            pg_catalog.format('hold %s expired at %s', p_hold_id, v_hold.expires_at), 'hold_id');
    end if;
    return v_hold;
end
$$;

-- require_hold_party: raises FORBIDDEN unless end user p_acting_user owns the account of hold p_hold_id or
-- its credit account (the payer or the payee settles it). Locks nothing (neither ever changes).
-- Raises: INVALID_REQUEST, HOLD_NOT_FOUND, FORBIDDEN.
create or replace function pgwallet.require_hold_party(p_hold_id bigint, p_acting_user text)
returns void
language plpgsql
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_request(length(p_acting_user) between 1 and 200, 'acting_user',
                                   'is required (1 to 200 characters)');
    if not exists (select 1 from pgwallet.holds h where h.id = p_hold_id) then
        perform pgwallet.raise_error('HOLD_NOT_FOUND', pg_catalog.format('hold %s', p_hold_id), 'hold_id');
    end if;
    if not exists (select 1 from pgwallet.holds h join pgwallet.accounts a on a.id in (h.account_id, h.credit_account_id)
                   where h.id = p_hold_id and a.owner = p_acting_user) then
        perform pgwallet.raise_error('FORBIDDEN',
            pg_catalog.format('hold %s is neither paid by nor paid to user %s', p_hold_id, p_acting_user), 'hold_id');
    end if;
end
$$;

-- capture_request: the body of capture_hold and user_capture_hold (p_scope names which): settles an open
-- hold by paying p_amount (all when null) to its credit account and releasing the rest, once per key. A
-- hold is settled once: a capture racing a void has one winner. Internal. Locks: the hold row, then see
-- post_legs. Raises: INVALID_REQUEST, HOLD_NOT_FOUND, HOLD_EXPIRED, INVALID_STATE_TRANSITION,
-- ACCOUNT_FROZEN, ACCOUNT_CLOSED, DUPLICATE_REQUEST.
create or replace function pgwallet.capture_request(p_scope text, p_hold_id bigint, p_idempotency_key text,
                                                    p_amount bigint)
returns jsonb
language plpgsql
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_request  jsonb;
    v_response jsonb;
    v_hold     pgwallet.holds;
    v_amount   bigint;
    v_posted   record;
begin
    perform pgwallet.check_request(p_amount is null or p_amount > 0, 'amount',
                                   'must be a positive whole number of minor units');
    v_request := jsonb_build_object('hold_id', p_hold_id, 'amount', p_amount);
    v_response := pgwallet.claim_idempotency_key(p_scope, p_idempotency_key, v_request);
    if v_response is not null then
        return v_response;
    end if;
    v_hold := pgwallet.lock_open_hold(p_hold_id, 'captured');
    v_amount := coalesce(p_amount, v_hold.amount);
    perform pgwallet.check_request(v_amount <= v_hold.amount, 'amount',
                                   pg_catalog.format('must not exceed the held %s', v_hold.amount));
    v_posted := pgwallet.post_legs(nextval('pgwallet.operation_id_seq'), 'hold_capture',
                                   array[v_hold.account_id], array[v_hold.credit_account_id], array[v_amount],
                                   v_hold.metadata, v_hold.id, v_hold.amount);
    update pgwallet.holds
    set status = 'captured', captured_amount = v_amount, settlement_transfer_id = v_posted.transfer_ids[1],
        settled_at = now()
    where id = p_hold_id
    returning * into v_hold;
    return pgwallet.complete_idempotency_key(p_scope, p_idempotency_key, v_request, pgwallet.hold_json(v_hold));
end
$$;

-- capture_hold: capture_request on any hold but a domain's own. Staff. Locks: the hold row, then see
-- post_legs. Raises: as capture_request.
create or replace function pgwallet.capture_hold(
    p_hold_id         bigint,
    p_idempotency_key text,
    p_amount          bigint default null)
returns jsonb
language sql
security definer
set search_path = pgwallet, pg_temp
as $$
    select pgwallet.capture_request('capture_hold', p_hold_id, p_idempotency_key, p_amount)
$$;

-- user_capture_hold: capture_request by end user p_acting_user, the payer or the payee of the hold. App.
-- Locks: the hold row, then see post_legs. Raises: FORBIDDEN, as capture_request.
create or replace function pgwallet.user_capture_hold(
    p_acting_user     text,
    p_hold_id         bigint,
    p_idempotency_key text,
    p_amount          bigint default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.require_hold_party(p_hold_id, p_acting_user);
    return pgwallet.capture_request('user_capture_hold', p_hold_id, p_idempotency_key, p_amount);
end
$$;

-- release_hold: voids open hold p_hold_id (a domain's own hold only with its p_domain): its whole amount
-- becomes available again. Allowed on a frozen account (it only gives money back). Internal.
-- Locks: the hold row, then its account. Raises: HOLD_NOT_FOUND, INVALID_STATE_TRANSITION.
create or replace function pgwallet.release_hold(p_hold_id bigint, p_domain text default null)
returns pgwallet.holds
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_hold pgwallet.holds;
begin
    v_hold := pgwallet.lock_open_hold(p_hold_id, 'voided', p_domain);
    update pgwallet.accounts set held = held - v_hold.amount, updated_at = now() where id = v_hold.account_id;
    update pgwallet.holds set status = 'voided', settled_at = now() where id = p_hold_id
    returning * into v_hold;
    return v_hold;
end
$$;

-- void_request: the body of void_hold and user_void_hold (p_scope names which). Internal.
-- Locks: the hold row, then its account. Raises: as void_hold.
create or replace function pgwallet.void_request(p_scope text, p_hold_id bigint, p_idempotency_key text)
returns jsonb
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_request  jsonb := jsonb_build_object('hold_id', p_hold_id);
    v_response jsonb;
begin
    v_response := pgwallet.claim_idempotency_key(p_scope, p_idempotency_key, v_request);
    if v_response is not null then
        return v_response;
    end if;
    return pgwallet.complete_idempotency_key(p_scope, p_idempotency_key, v_request,
                                             pgwallet.hold_json(pgwallet.release_hold(p_hold_id)));
end
$$;

-- void_hold: cancels an open hold (not a domain's own), once per key; its whole amount becomes available
-- again. Staff. Locks: the hold row, then its account. Raises: HOLD_NOT_FOUND, INVALID_STATE_TRANSITION,
-- DUPLICATE_REQUEST, INVALID_REQUEST.
create or replace function pgwallet.void_hold(p_hold_id bigint, p_idempotency_key text)
returns jsonb
language sql
security definer
set search_path = pgwallet, pg_temp
as $$
    select pgwallet.void_request('void_hold', p_hold_id, p_idempotency_key)
$$;

-- user_void_hold: void_hold by end user p_acting_user, the payer or the payee of the hold. App.
-- Locks: the hold row, then its account. Raises: FORBIDDEN, as void_hold.
create or replace function pgwallet.user_void_hold(p_acting_user text, p_hold_id bigint, p_idempotency_key text)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.require_hold_party(p_hold_id, p_acting_user);
    return pgwallet.void_request('user_void_hold', p_hold_id, p_idempotency_key);
end
$$;

-- capture_hold_split: settles open hold p_hold_id (locked by the caller, or here; a domain's own hold with
-- its p_domain) by paying its whole amount to its credit account, and in the same operation passes p_fee
-- of it on to p_fee_account_id (a platform fee, usually a collector). Leg 1 (hold account -> credit
-- account, the whole amount) carries the hold id, so captured_amount is the whole amount and the hold
-- keeps exactly its settlement transfer; leg 2 (credit account -> fee account, p_fee) follows only when
-- p_fee > 0. Internal. Locks: the hold row, then see post_legs.
-- Raises: as capture_hold (INVALID_REQUEST for a fee outside 0..amount).
create or replace function pgwallet.capture_hold_split(
    p_hold_id        bigint,
    p_fee_account_id bigint,
    p_fee            bigint,
    p_kind           text default 'hold_capture',
    p_metadata       jsonb default null,
    p_domain         text default null,
    out hold         pgwallet.holds,
    out transfer_ids bigint[])
language plpgsql
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_posted record;
begin
    hold := pgwallet.lock_open_hold(p_hold_id, 'captured', p_domain);
    perform pgwallet.check_request(p_fee between 0 and hold.amount, 'fee',
                                   pg_catalog.format('must be 0 to the held %s', hold.amount));
    if p_fee > 0 then
        v_posted := pgwallet.post_legs(nextval('pgwallet.operation_id_seq'), p_kind,
                                       array[hold.account_id, hold.credit_account_id],
                                       array[hold.credit_account_id, p_fee_account_id],
                                       array[hold.amount, p_fee], coalesce(p_metadata, hold.metadata),
                                       hold.id, hold.amount);
    else
        v_posted := pgwallet.post_legs(nextval('pgwallet.operation_id_seq'), p_kind, array[hold.account_id],
                                       array[hold.credit_account_id], array[hold.amount],
                                       coalesce(p_metadata, hold.metadata), hold.id, hold.amount);
    end if;
    transfer_ids := v_posted.transfer_ids;
    update pgwallet.holds
    set status = 'captured', captured_amount = amount, settlement_transfer_id = transfer_ids[1], settled_at = now()
    where id = p_hold_id
    returning * into hold;
end
$$;

-- expire_holds: the sweep. Releases up to p_limit open holds whose expires_at has passed (never
-- earlier) and returns how many. A hold that cannot be released is skipped and reported (a WARNING naming
-- it and its error) instead of rolling back the batch: the sweep never wedges. Locks: those holds (skipping
-- locked ones), then their accounts by ascending id. Raises: INVALID_REQUEST.
create or replace function pgwallet.expire_holds(p_limit integer default 1000)
returns integer
language plpgsql
security definer
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_ids   bigint[];
    v_id    bigint;
    v_count integer := 0;
begin
    perform pgwallet.check_request(p_limit between 1 and 100000, 'limit', 'must be 1 to 100000');
    v_ids := array(select id from pgwallet.holds
                   where status = 'open' and expires_at <= now()
                   order by id limit p_limit
                   for update skip locked);
    perform 1 from pgwallet.accounts
    where id in (select account_id from pgwallet.holds where id = any (v_ids))
    order by id
    for update;
    begin
        perform pgwallet.expire_hold_set(v_ids);
        return coalesce(array_length(v_ids, 1), 0);
    exception when others then
        null;  -- one of them failed: release them one by one below, skipping the failing ones
    end;
    foreach v_id in array v_ids loop
        begin
            perform pgwallet.expire_hold_set(array[v_id]);
            v_count := v_count + 1;
        exception when others then
            raise warning 'pgwallet.expire_holds: hold % skipped (%: %)', v_id, sqlstate, sqlerrm;
        end;
    end loop;
    return v_count;
end
$$;

-- expire_hold_set: releases the open holds p_ids (locked by the caller) as expired. Internal.
-- Locks: their accounts. Raises: nothing of its own.
create or replace function pgwallet.expire_hold_set(p_ids bigint[])
returns void
language plpgsql
set search_path = pgwallet, pg_temp
as $$
begin
    update pgwallet.accounts a
    set held = a.held - h.amount, updated_at = now()
    from (select account_id, sum(amount)::bigint as amount from pgwallet.holds
          where id = any (p_ids) group by account_id) h
    where a.id = h.account_id;
    update pgwallet.holds set status = 'expired', settled_at = now() where id = any (p_ids);
end
$$;

-- place_parts_hold: reserves p_amount on ordinary account p_account_id for a hold paid out in parts
-- (payouts): it has many destinations, so its credit_account_id is the account itself; it never
-- expires, cannot be captured or voided, and is settled only through pay_hold_parts. Internal.
-- Locks: the account row. Raises: INVALID_REQUEST, ACCOUNT_NOT_FOUND, ACCOUNT_FROZEN, ACCOUNT_CLOSED,
-- the account's debit refusal (e.g. CARD_BLOCKED), INSUFFICIENT_FUNDS.
create or replace function pgwallet.place_parts_hold(p_account_id bigint, p_amount bigint,
                                                     p_metadata jsonb default '{}')
returns pgwallet.holds
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_account pgwallet.accounts;
    v_hold    pgwallet.holds;
begin
    perform pgwallet.check_request(p_amount > 0, 'amount', 'must be a positive whole number of minor units');
    select * into v_account from pgwallet.accounts where id = p_account_id for update;
    if not found then
        perform pgwallet.raise_error('ACCOUNT_NOT_FOUND', pg_catalog.format('account %s', p_account_id),
                                     'account_id');
    end if;
    perform pgwallet.check_request(not v_account.collector, 'account_id',
                                   'holds are placed on ordinary accounts, not on collector accounts');
    perform pgwallet.require_active_account(v_account.id, v_account.status, 'account_id');
    perform pgwallet.require_debit_allowed(v_account.id, v_account.debit_refusal, 'account_id');
    if not v_account.allow_negative and v_account.balance - v_account.held < p_amount then
        perform pgwallet.raise_error('INSUFFICIENT_FUNDS',
            pg_catalog.format('account %s has %s available, %s requested', v_account.id,
                              pgwallet.money(v_account.balance - v_account.held, v_account.currency),
                              pgwallet.money(p_amount, v_account.currency)), 'account_id');
    end if;
    update pgwallet.accounts set held = held + p_amount, updated_at = now() where id = p_account_id;
    insert into pgwallet.holds (account_id, credit_account_id, amount, currency, metadata)
    values (p_account_id, p_account_id, p_amount, v_account.currency, coalesce(p_metadata, '{}'))
    returning * into v_hold;
    return v_hold;
end
$$;

-- pay_hold_parts: pays parts of an open hold placed by place_parts_hold, set-based: one transfer per
-- credit (p_credits[i] gets p_amounts[i]; distinct ordinary accounts), each carrying the hold's id.
-- The hold's amount (what is still held) shrinks by what is paid. A credit account that is missing,
-- frozen, closed, a collector or of another currency is refused alone: its row comes back with the
-- error code and nothing is paid to it. With p_settle (or when nothing remains held) the remainder
-- is released and the hold settled: captured (amount = paid + released, captured_amount = every part)
-- or voided when no part was ever paid. p_transfer_ids, when given, are the ids (from
-- transfers_id_seq) the accepted parts take, so a caller can record them first. Returns one row per
-- credit, in input order. Internal.
-- Locks: the credit accounts FOR UPDATE by ascending id, then the hold's account, then the hold row. The
-- credit side is written before the hold's account is locked, so calls paying different accounts from
-- one hold (the batches of a payout) overlap and queue only for the short debit side. With credits, the
-- hold's account is taken when free, never queued for (a transaction holding it may be waiting for a
-- credit): after 500 ms (the setting pgwallet.hold_account_lock_wait) the call gives up.
-- Raises: INVALID_REQUEST, HOLD_NOT_FOUND, INVALID_STATE_TRANSITION, INSUFFICIENT_FUNDS, ACCOUNT_FROZEN,
-- ACCOUNT_CLOSED, serialization_failure (40001: the hold's account stayed locked; retry the call).
create or replace function pgwallet.pay_hold_parts(
    p_hold_id      bigint,
    p_operation_id bigint,
    p_kind         text,
    p_credits      bigint[],
    p_amounts      bigint[],
    p_settle       boolean default false,
    p_metadata     jsonb default '{}',
    p_transfer_ids bigint[] default null)
returns table (account_id bigint, transfer_id bigint, refusal text)
language plpgsql
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    n           integer := coalesce(array_length(p_amounts, 1), 0);
    v_hold      pgwallet.holds;
    v_account   pgwallet.accounts;
    v_credits   bigint[];
    v_amounts   bigint[];
    v_transfers bigint[];
    v_total     bigint;
    v_refusals  text[];
    v_balances  bigint[];
    v_versions  bigint[];
    c_id        bigint[];
    c_status    text[];
    c_currency  text[];
    c_balance   bigint[];
    c_version   bigint[];
    v_paid      integer;
    v_captured  bigint;
    v_last      bigint;
    v_deadline  timestamptz;
begin
    if coalesce(array_length(p_credits, 1), 0) <> n
       or (p_transfer_ids is not null and (cardinality(p_transfer_ids) <> n or array_position(p_transfer_ids, null) > 0))
       or exists (select 1 from unnest(p_credits, p_amounts) u(c, a) where u.c is null or u.a is null or u.a <= 0)
       or (select count(distinct c) from unnest(p_credits) c) <> n then
        perform pgwallet.raise_error('INVALID_REQUEST',
            'parts: distinct credit accounts, each with a positive amount', 'parts');
    end if;
    -- what the credit side needs of the hold (its account and currency) never changes: read unlocked
    select * into v_hold from pgwallet.holds h where h.id = p_hold_id;
    if not found then
        perform pgwallet.raise_error('HOLD_NOT_FOUND', pg_catalog.format('hold %s', p_hold_id), 'hold_id');
    end if;
    if v_hold.status <> 'open' or v_hold.credit_account_id <> v_hold.account_id then  -- settled holds stay so
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('hold %s is %s, or not a hold paid in parts', p_hold_id, v_hold.status), 'hold_id');
    end if;
    -- one locking read of every credit account, kept in arrays for the rest (the hold's own account is
    -- locked for the debit side, below: as a credit it is refused)
    select coalesce(array_agg(a.id), '{}'), coalesce(array_agg(a.status), '{}'), coalesce(array_agg(a.currency), '{}'),
           coalesce(array_agg(a.balance), '{}'), coalesce(array_agg(a.version), '{}')
    into c_id, c_status, c_currency, c_balance, c_version
    from (select x.id, x.status, x.currency, x.balance, x.version from pgwallet.accounts x
          where x.id = any (p_credits) and x.id <> v_hold.account_id and not x.collector
          order by x.id
          for update) a;

    -- judge every part: null for an accepted one, else the code of the error it would have raised
    -- (a collector was not locked above: it is refused like a missing account would be, by its code)
    -- (the parts come sorted once, in input order, and every array is aggregated from that one pass)
    select array_agg(j.refusal),
           coalesce(array_agg(j.credit) filter (where j.refusal is null), '{}'),
           coalesce(array_agg(j.amount) filter (where j.refusal is null), '{}'),
           coalesce(array_agg(j.balance) filter (where j.refusal is null), '{}'),
           coalesce(array_agg(j.version) filter (where j.refusal is null), '{}'),
           coalesce(sum(j.amount) filter (where j.refusal is null), 0)::bigint,
           coalesce(array_agg(j.transfer_id) filter (where j.refusal is null), '{}')
    into v_refusals, v_credits, v_amounts, v_balances, v_versions, v_total, v_transfers
    from (select u.ord, u.credit, u.amount, c.balance, c.version, p_transfer_ids[u.ord] as transfer_id,
                 case when c.id is null then
                          case when exists (select 1 from pgwallet.accounts x where x.id = u.credit)
                               then 'INVALID_REQUEST' else 'ACCOUNT_NOT_FOUND' end
                      when c.status = 'frozen' then 'ACCOUNT_FROZEN'
                      when c.status = 'closed' then 'ACCOUNT_CLOSED'
                      when c.currency <> v_hold.currency then 'CURRENCY_MISMATCH'
                      when c.balance > 9223372036854775807 - u.amount then 'INVALID_REQUEST'
                 end as refusal
          from unnest(p_credits, p_amounts) with ordinality u(credit, amount, ord)
          left join unnest(c_id, c_status, c_currency, c_balance, c_version) c(id, status, currency, balance, version)
                 on c.id = u.credit
          order by u.ord) j;
    v_paid := cardinality(v_credits);

    -- the credit side: one transfer and one entry per accepted part, each credit's balance
    if v_paid > 0 then
        if p_transfer_ids is null then
            v_transfers := array(select nextval('pgwallet.transfers_id_seq') from generate_series(1, v_paid));
        end if;
        insert into pgwallet.transfers (id, operation_id, debit_account_id, credit_account_id, amount, currency,
                                        hold_id, kind, metadata)
        select t.id, p_operation_id, v_hold.account_id, t.credit, t.amount, v_hold.currency, p_hold_id, p_kind,
               coalesce(p_metadata, '{}')
        from unnest(v_transfers, v_credits, v_amounts) t(id, credit, amount);
        insert into pgwallet.entries (transfer_id, account_id, slot, amount, previous_balance, new_balance,
                                      account_version)
        select t.id, t.credit, null, t.amount, t.balance, t.balance + t.amount, t.version + 1
        from unnest(v_transfers, v_credits, v_amounts, v_balances, v_versions) t(id, credit, amount, balance, version);
        update pgwallet.accounts a
        set balance = u.balance + u.amount, version = u.version + 1, updated_at = now()
        from unnest(v_credits, v_amounts, v_balances, v_versions) u(id, amount, balance, version)
        where a.id = u.id;
    end if;

    -- the debit side, under the hold's account and then the hold: one debit per part, its running balance
    -- by a window. A transaction holding that account may be waiting for one of the credits locked above
    -- (a transfer between the pool and a winner), so with credits this call never queues for it: it
    -- takes it when free (SKIP LOCKED), looking again every millisecond for at most 500 ms (the setting
    -- pgwallet.hold_account_lock_wait), then rolls back as a serialization failure, to be retried
    if n > 0 then
        v_deadline := pg_catalog.clock_timestamp()
            + coalesce(nullif(pg_catalog.current_setting('pgwallet.hold_account_lock_wait', true), ''),
                       '500ms')::interval;
        loop
            select * into v_account from pgwallet.accounts a where a.id = v_hold.account_id for update skip locked;
            exit when found;
            if pg_catalog.clock_timestamp() > v_deadline then
                raise exception using errcode = 'serialization_failure',
                    message = pg_catalog.format('account %s stayed locked: nothing was paid, retry', v_hold.account_id);
            end if;
            perform pg_catalog.pg_sleep(0.001);
        end loop;
    else
        select * into v_account from pgwallet.accounts a where a.id = v_hold.account_id for update;
    end if;
    select * into v_hold from pgwallet.holds h where h.id = p_hold_id for update;
    if v_hold.status <> 'open' then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('hold %s is %s', p_hold_id, v_hold.status), 'hold_id');
    end if;
    if v_total > v_hold.amount then
        perform pgwallet.raise_error('INSUFFICIENT_FUNDS',
            pg_catalog.format('hold %s has %s left, parts need %s', p_hold_id, v_hold.amount, v_total), 'parts');
    end if;
    if v_account.status <> 'active' then
        perform pgwallet.require_active_account(v_account.id, v_account.status, 'hold_id');
    end if;
    if v_paid > 0 then
        insert into pgwallet.entries (transfer_id, account_id, slot, amount, previous_balance, new_balance,
                                      account_version)
        select t.id, v_hold.account_id, null::smallint, -t.amount, v_account.balance - sum(t.amount) over w + t.amount,
               v_account.balance - sum(t.amount) over w, v_account.version + t.ord
        from unnest(v_transfers, v_amounts) with ordinality t(id, amount, ord)
        window w as (order by t.ord rows between unbounded preceding and current row);
    end if;

    v_hold.amount := v_hold.amount - v_total;
    if v_hold.amount > 0 and not p_settle then
        update pgwallet.accounts a
        set balance = a.balance - v_total, held = a.held - v_total, version = a.version + v_paid, updated_at = now()
        where a.id = v_hold.account_id;
        update pgwallet.holds h set amount = v_hold.amount where h.id = p_hold_id;
    else
        -- settle: release what is left; the hold keeps its whole story (paid parts + released rest)
        update pgwallet.accounts a
        set balance = a.balance - v_total, held = a.held - v_total - v_hold.amount, version = a.version + v_paid,
            updated_at = now()
        where a.id = v_hold.account_id;
        select sum(t.amount)::bigint, max(t.id) into v_captured, v_last
        from pgwallet.transfers t where t.hold_id = p_hold_id;
        update pgwallet.holds h
        set status = case when v_captured is null then 'voided' else 'captured' end,
            amount = coalesce(v_captured, 0) + v_hold.amount,
            captured_amount = v_captured, settlement_transfer_id = v_last, settled_at = now()
        where h.id = p_hold_id;
    end if;

    return query
    select u.credit, t.id, u.refusal
    from unnest(p_credits, v_refusals) with ordinality u(credit, refusal, ord)
    left join unnest(v_transfers, v_credits) t(id, credit) on t.credit = u.credit and u.refusal is null
    order by u.ord;
end
$$;

-- get_hold: one hold and its settlement. Locks nothing. Raises: HOLD_NOT_FOUND.
create or replace function pgwallet.get_hold(p_hold_id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_hold pgwallet.holds;
begin
    select * into v_hold from pgwallet.holds where id = p_hold_id;
    if not found then
        perform pgwallet.raise_error('HOLD_NOT_FOUND', pg_catalog.format('hold %s', p_hold_id), 'hold_id');
    end if;
    return pgwallet.hold_json(v_hold);
end
$$;

-- get_account: one account with its balance, held and available amounts. Locks nothing.
-- Raises: ACCOUNT_NOT_FOUND.
create or replace function pgwallet.get_account(p_account_id bigint)
returns setof pgwallet.account_balances
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    return query select * from pgwallet.account_balances where id = p_account_id;
    if not found then
        perform pgwallet.raise_error('ACCOUNT_NOT_FOUND', pg_catalog.format('account %s', p_account_id),
                                     'account_id');
    end if;
end
$$;

-- account_history: the account's entries, newest first, p_limit at a time; pass the last entry_id
-- seen as p_before_entry_id for the next page. Locks nothing. Raises: ACCOUNT_NOT_FOUND, INVALID_REQUEST.
create or replace function pgwallet.account_history(p_account_id bigint, p_limit integer default 50,
                                                    p_before_entry_id bigint default null)
returns table (entry_id bigint, transfer_id bigint, operation_id bigint, kind text,
               counterparty_account_id bigint, amount bigint, previous_balance bigint, new_balance bigint,
               account_version bigint, slot smallint, hold_id bigint, metadata jsonb, created_at timestamptz)
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_request(p_limit between 1 and 1000, 'limit', 'must be 1 to 1000');
    if not exists (select 1 from pgwallet.accounts where id = p_account_id) then
        perform pgwallet.raise_error('ACCOUNT_NOT_FOUND', pg_catalog.format('account %s', p_account_id),
                                     'account_id');
    end if;
    return query
    select e.id, t.id, t.operation_id, t.kind,
           case when t.debit_account_id = e.account_id then t.credit_account_id else t.debit_account_id end,
           e.amount, e.previous_balance, e.new_balance, e.account_version, e.slot, t.hold_id, t.metadata,
           e.created_at
    from pgwallet.entries e
    join pgwallet.transfers t on t.id = e.transfer_id
    where e.account_id = p_account_id and (p_before_entry_id is null or e.id < p_before_entry_id)
    order by e.id desc
    limit p_limit;
end
$$;

-- list_accounts: accounts in id order with their balances (only those of kind p_kind when given), p_limit
-- at a time after p_after_id. Locks nothing. Raises: INVALID_REQUEST.
create or replace function pgwallet.list_accounts(p_kind text default null, p_limit integer default 100,
                                                  p_after_id bigint default 0)
returns setof pgwallet.account_balances
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_request(p_limit between 1 and 1000, 'limit', 'must be 1 to 1000');
    return query select * from pgwallet.account_balances b
                 where b.id > coalesce(p_after_id, 0) and (p_kind is null or b.kind = p_kind)
                 order by b.id limit p_limit;
end
$$;

-- What each tier may call (the README's matrix). The owner runs everything; PUBLIC executes nothing.
grant execute on function
    pgwallet.user_transfer(text, bigint, bigint, bigint, text, jsonb),
    pgwallet.user_place_hold(text, bigint, bigint, bigint, text, integer, jsonb),
    pgwallet.user_capture_hold(text, bigint, text, bigint),
    pgwallet.user_void_hold(text, bigint, text),
    pgwallet.open_account(text, text, text, boolean, jsonb, text),
    pgwallet.get_account(bigint),
    pgwallet.get_hold(bigint),
    pgwallet.account_history(bigint, integer, bigint)
    to pgwallet_app;
grant execute on function
    pgwallet.transfer(bigint, bigint, bigint, text, jsonb),
    pgwallet.post_operation(jsonb, text, text, jsonb),
    pgwallet.place_hold(bigint, bigint, bigint, text, integer, jsonb),
    pgwallet.capture_hold(bigint, text, bigint),
    pgwallet.void_hold(bigint, text),
    pgwallet.set_account_status(bigint, text),
    pgwallet.list_accounts(text, integer, bigint),
    pgwallet.purge_idempotency_keys(integer)
    to pgwallet_staff;
grant execute on function pgwallet.expire_holds(integer) to pgwallet_worker;
grant execute on function
    pgwallet.open_system_account(text, text, text, boolean, boolean, jsonb),
    pgwallet.fund_account(bigint, bigint, bigint, text, jsonb)
    to pgwallet_admin;
