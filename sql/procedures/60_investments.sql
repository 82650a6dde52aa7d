-- Investments: products, investments executed by durable jobs, dividends paid through payout jobs,
-- feature flags (kill switches) and per-user rate limits. Everything an edge function calls returns
-- at once: executions and dividends are jobs (50_jobs.sql) that workers run.
-- Order inside a call: validate the input, read the feature flags, claim the idempotency key (a replay
-- returns here, without touching the rate limit), check the rows, take the rate limit, act. Any refusal
-- rolls the whole call back: no key, no rate-limit hit, no row.
-- Lock order: the job row, then the investment or dividend row, then (post_legs) the accounts.

-- Signatures replaced by 0009's trust boundary (the acting user).
drop function if exists pgwallet.create_investment(bigint, bigint, bigint, text);
drop function if exists pgwallet.execute_investment(bigint, text);

-- feature_enabled: is flag p_name on? Read on every call (no cache), so a switch takes effect at once.
-- Locks nothing. Raises: nothing (an unknown flag is off).
create or replace function pgwallet.feature_enabled(p_name text)
returns boolean
language sql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
    select coalesce((select f.enabled from pgwallet.feature_flags f where f.name = p_name), false)
$$;

-- require_feature: raises FEATURE_DISABLED naming the first of p_names that is off. Locks nothing.
create or replace function pgwallet.require_feature(variadic p_names text[])
returns void
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_name text;
begin
    foreach v_name in array p_names loop
        if not pgwallet.feature_enabled(v_name) then
            perform pgwallet.raise_error('FEATURE_DISABLED', pg_catalog.format('feature flag %s is off', v_name),
                                         null, 'an operator switches it on: pgwallet flags enable ' || v_name);
        end if;
    end loop;
end
$$;

-- list_feature_flags: every flag with its state, as a JSON array by name. Locks nothing.
create or replace function pgwallet.list_feature_flags()
returns jsonb
language sql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
    select coalesce(jsonb_agg(jsonb_build_object('name', f.name, 'enabled', f.enabled, 'description', f.description,
                                                 'updated_by', f.updated_by, 'updated_at', f.updated_at)
                              order by f.name), '[]')
    from pgwallet.feature_flags f
$$;

-- Signatures replaced by 0009's trust boundary (staff act under their id in the staff table).
drop function if exists pgwallet.set_feature_flag(text, boolean, text);
drop function if exists pgwallet.create_investment_product(text, text, text, text);
drop function if exists pgwallet.distribute_dividend(bigint, bigint, text, text);

-- staff_label: how a staff member is recorded ("Sam (staff 3)") and counted by rate limits ("staff:3").
-- Locks nothing.
create or replace function pgwallet.staff_label(p_staff pgwallet.staff)
returns text
language sql
immutable
set search_path = pgwallet, pg_temp
as $$
    select left(p_staff.name, 180) || ' (staff ' || p_staff.id || ')'
$$;

-- set_feature_flag: switches flag p_name on or off (the active staff member p_staff_id is recorded); the
-- next call sees it.
-- Locks: the flag row. Raises: INVALID_REQUEST (an unknown flag names the field name), STAFF_NOT_AUTHORIZED.
create or replace function pgwallet.set_feature_flag(p_name text, p_enabled boolean, p_staff_id bigint)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_flag  pgwallet.feature_flags;
    v_staff pgwallet.staff;
begin
    perform pgwallet.check_request(p_enabled is not null, 'enabled', 'must be true or false');
    v_staff := pgwallet.require_staff(p_staff_id);
    update pgwallet.feature_flags f
    set enabled = p_enabled, updated_by = pgwallet.staff_label(v_staff), updated_at = clock_timestamp()
    where f.name = p_name
    returning * into v_flag;
    if not found then
        perform pgwallet.raise_error('INVALID_REQUEST',
            'name: must be a known feature flag (' || (select string_agg(f.name, ', ' order by f.name)
                                                       from pgwallet.feature_flags f) || ')', 'name');
    end if;
    return jsonb_build_object('name', v_flag.name, 'enabled', v_flag.enabled, 'description', v_flag.description,
                              'updated_by', v_flag.updated_by, 'updated_at', v_flag.updated_at);
end
$$;

-- take_rate_limit: records one call of p_action by p_subject, or raises RATE_LIMITED when the subject
-- already made max_calls calls in the last window_seconds (table pgwallet.rate_limits; an action with
-- no row is not limited). The hit is written in the caller's transaction: a call refused later leaves
-- none. Locks: a transaction advisory lock on (action, subject), so concurrent calls count one after
-- the other and never exceed the limit. Raises: RATE_LIMITED, with the seconds until the next allowed
-- call in DETAIL and in HINT as retry_after=N.
create or replace function pgwallet.take_rate_limit(p_action text, p_subject text)
returns void
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_limit  pgwallet.rate_limits;
    v_now    timestamptz;
    v_count  integer;
    v_oldest timestamptz;
    v_wait   integer;
begin
    select * into v_limit from pgwallet.rate_limits r where r.action = p_action;
    if not found then
        return;
    end if;
    perform pg_catalog.pg_advisory_xact_lock(1885828980, pg_catalog.hashtext('rate/' || p_action || '/' || p_subject));
    v_now := clock_timestamp();  -- after the wait: the window ends now, not when the transaction began
    select count(*), min(h.created_at) into v_count, v_oldest
    from (select x.created_at from pgwallet.rate_limit_hits x
          where x.action = p_action and x.subject = p_subject
            and x.created_at > v_now - make_interval(secs => v_limit.window_seconds)
          order by x.created_at desc
          limit v_limit.max_calls) h;
    if v_count >= v_limit.max_calls then
        -- the oldest of the last max_calls calls leaves the window first
        v_wait := greatest(1, ceil(extract(epoch from v_oldest + make_interval(secs => v_limit.window_seconds)
                                                      - v_now))::integer);
        perform pgwallet.raise_error('RATE_LIMITED',
            pg_catalog.format('%s: at most %s calls per %s s for %s; next call allowed in %s s', p_action,
                              v_limit.max_calls, v_limit.window_seconds, p_subject, v_wait),
            null, 'retry_after=' || v_wait);
    end if;
    insert into pgwallet.rate_limit_hits (action, subject, created_at) values (p_action, p_subject, v_now);
end
$$;

-- list_rate_limits: the configured limits, as a JSON array by action. Locks nothing.
create or replace function pgwallet.list_rate_limits()
returns jsonb
language sql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
    select coalesce(jsonb_agg(jsonb_build_object('action', r.action, 'max_calls', r.max_calls,
                                                 'window_seconds', r.window_seconds, 'description', r.description)
                              order by r.action), '[]')
    from pgwallet.rate_limits r
$$;

-- set_rate_limit: changes the limit of a configured action; takes effect on the next call.
-- Locks: the limit row. Raises: INVALID_REQUEST.
create or replace function pgwallet.set_rate_limit(p_action text, p_max_calls integer, p_window_seconds integer)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_limit pgwallet.rate_limits;
begin
    perform pgwallet.check_request(p_max_calls between 1 and 1000000, 'max_calls', 'must be 1 to 1000000');
    perform pgwallet.check_request(p_window_seconds between 1 and 31536000, 'window_seconds',
                                   'must be 1 to 31536000 (a year)');
    update pgwallet.rate_limits r set max_calls = p_max_calls, window_seconds = p_window_seconds
    where r.action = p_action
    returning * into v_limit;
    if not found then
        perform pgwallet.raise_error('INVALID_REQUEST',
            'action: must be a rate-limited action (' || (select string_agg(r.action, ', ' order by r.action)
                                                           from pgwallet.rate_limits r) || ')', 'action');
    end if;
    return jsonb_build_object('action', v_limit.action, 'max_calls', v_limit.max_calls,
                              'window_seconds', v_limit.window_seconds, 'description', v_limit.description);
end
$$;

-- purge_rate_limit_hits: deletes up to p_batch_size hits older than the longest window (they count for
-- nothing any more) and returns how many; call it in a loop until 0. Locks: the deleted rows, SKIP
-- LOCKED. Raises: INVALID_REQUEST.
create or replace function pgwallet.purge_rate_limit_hits(p_batch_size integer default 1000)
returns integer
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_count  integer;
    v_before timestamptz := clock_timestamp()
        - make_interval(secs => coalesce((select max(r.window_seconds) from pgwallet.rate_limits r), 0));
begin
    p_batch_size := coalesce(p_batch_size, 1000);
    perform pgwallet.check_request(p_batch_size between 1 and 100000, 'batch_size', 'must be 1 to 100000');
    delete from pgwallet.rate_limit_hits h
    where h.id = any (array(
        select x.id from pgwallet.rate_limit_hits x where x.created_at < v_before
        limit p_batch_size
        for update skip locked));
    get diagnostics v_count = row_count;
    return v_count;
end
$$;

-- product_json: the public view of a product, with what is invested in it. Locks nothing.
create or replace function pgwallet.product_json(p_product pgwallet.investment_products)
returns jsonb
language sql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
    select jsonb_build_object(
        'product_id', p_product.id, 'name', p_product.name, 'currency', p_product.currency,
        'account_id', p_product.account_id, 'dividend_account_id', p_product.dividend_account_id,
        'created_by', p_product.created_by, 'created_at', p_product.created_at,
        'invested_amount', coalesce(sum(i.amount), 0), 'holders', count(distinct i.wallet_account_id),
        'replayed', false)
    from pgwallet.investments i
    where i.product_id = p_product.id and i.status = 'executed'
$$;

-- investment_json: the public view of an investment. Locks nothing.
create or replace function pgwallet.investment_json(p_investment pgwallet.investments)
returns jsonb
language sql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
    select jsonb_build_object(
        'investment_id', p_investment.id, 'product_id', p_investment.product_id,
        'wallet_account_id', p_investment.wallet_account_id, 'amount', p_investment.amount,
        'status', p_investment.status, 'job_id', p_investment.job_id, 'transfer_id', p_investment.transfer_id,
        'error', p_investment.error, 'created_at', p_investment.created_at, 'queued_at', p_investment.queued_at,
        'executed_at', p_investment.executed_at, 'replayed', false)
$$;

-- dividend_json: the public view of a dividend, with its payout job's progress. Locks nothing.
create or replace function pgwallet.dividend_json(p_dividend pgwallet.dividends)
returns jsonb
language sql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
    select jsonb_build_object(
        'dividend_id', p_dividend.id, 'product_id', p_dividend.product_id, 'amount', p_dividend.amount,
        'status', p_dividend.status, 'job_id', p_dividend.job_id, 'payout_job_id', p_dividend.payout_job_id,
        'payout_status', (select j.status from pgwallet.payout_jobs j where j.id = p_dividend.payout_job_id),
        'paid_amount', coalesce((select j.paid_amount from pgwallet.payout_jobs j
                                 where j.id = p_dividend.payout_job_id), 0),
        'holders', p_dividend.holders, 'error', p_dividend.error, 'created_by', p_dividend.created_by,
        'created_at', p_dividend.created_at, 'replayed', false)
$$;

-- create_investment_product: a product named p_name in p_currency, once per idempotency key, with its
-- two accounts: the product account that receives the invested money (a collector: investors never
-- wait for each other) and the dividend account that the operator funds and dividends are paid from.
-- Rate limit: create_investment_product per staff member p_staff_id. Locks: a transaction advisory lock on the name.
-- Raises: INVALID_REQUEST, FEATURE_DISABLED, DUPLICATE_REQUEST (key reused, or the name is taken),
-- RATE_LIMITED.
create or replace function pgwallet.create_investment_product(p_name text, p_currency text, p_staff_id bigint,
                                                              p_idempotency_key text)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_request  jsonb;
    v_response jsonb;
    v_account  bigint;
    v_dividend bigint;
    v_product  pgwallet.investment_products;
    v_staff    pgwallet.staff;
begin
    perform pgwallet.check_request(length(p_name) between 1 and 200, 'name', 'must be 1 to 200 characters');
    perform pgwallet.check_request(exists (select 1 from pgwallet.currencies c where c.code = p_currency),
                                   'currency', 'must be a known currency code');
    v_staff := pgwallet.require_staff(p_staff_id);
    perform pgwallet.require_feature('investment_module_enabled');
    v_request := jsonb_build_object('name', p_name, 'currency', p_currency, 'staff_id', p_staff_id);
    v_response := pgwallet.claim_idempotency_key('create_investment_product', p_idempotency_key, v_request);
    if v_response is not null then
        return v_response;
    end if;
    perform pg_catalog.pg_advisory_xact_lock(1885828980, pg_catalog.hashtext('product/' || p_name));
    if exists (select 1 from pgwallet.investment_products p where p.name = p_name) then
        perform pgwallet.raise_error('DUPLICATE_REQUEST', pg_catalog.format('a product named %s exists', p_name),
                                     'name', 'product names are unique');
    end if;
    perform pgwallet.take_rate_limit('create_investment_product', 'staff:' || p_staff_id);
    v_account := (pgwallet.create_account(p_currency, 'escrow', left('investment product ' || p_name, 200), false,
                                        true)->>'id')::bigint;
    v_dividend := (pgwallet.create_account(p_currency, 'pool', left('dividends of ' || p_name, 200), false,
                                         false)->>'id')::bigint;
    insert into pgwallet.investment_products (name, currency, account_id, dividend_account_id, created_by)
    values (p_name, p_currency, v_account, v_dividend, pgwallet.staff_label(v_staff))
    returning * into v_product;
    return pgwallet.complete_idempotency_key('create_investment_product', p_idempotency_key, v_request,
                                             pgwallet.product_json(v_product));
end
$$;

-- get_investment_product: one product and what is invested in it. Locks nothing.
-- Raises: PRODUCT_NOT_FOUND.
create or replace function pgwallet.get_investment_product(p_product_id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_product pgwallet.investment_products;
begin
    select * into v_product from pgwallet.investment_products p where p.id = p_product_id;
    if not found then
        perform pgwallet.raise_error('PRODUCT_NOT_FOUND', pg_catalog.format('product %s', p_product_id), 'product_id');
    end if;
    return pgwallet.product_json(v_product);
end
$$;

-- create_investment: a pending investment of p_amount from wallet p_wallet_account_id in product
-- p_product_id, once per idempotency key. Moves nothing yet (execute_investment does, through a job);
-- the wallet's funds are checked then. Rate limit: create_investment per wallet. Locks: nothing but
-- the new row (and the rate-limit lock). Raises: INVALID_REQUEST, FEATURE_DISABLED, PRODUCT_NOT_FOUND,
-- ACCOUNT_NOT_FOUND, ACCOUNT_FROZEN, ACCOUNT_CLOSED, CURRENCY_MISMATCH, DUPLICATE_REQUEST, RATE_LIMITED.
create or replace function pgwallet.create_investment(p_wallet_account_id bigint, p_product_id bigint,
                                                      p_amount bigint, p_idempotency_key text,
                                                      p_acting_user text default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_request    jsonb;
    v_response   jsonb;
    v_product    pgwallet.investment_products;
    v_wallet     pgwallet.accounts;
    v_investment pgwallet.investments;
begin
    perform pgwallet.check_request(p_amount > 0, 'amount', 'must be a positive whole number of minor units');
    perform pgwallet.require_feature('investment_module_enabled');
    perform pgwallet.require_owner(p_wallet_account_id, p_acting_user, 'wallet_account_id');
    v_request := jsonb_build_object('wallet_account_id', p_wallet_account_id, 'product_id', p_product_id,
                                    'amount', p_amount);
    v_response := pgwallet.claim_idempotency_key('create_investment', p_idempotency_key, v_request);
    if v_response is not null then
        return v_response;
    end if;
    select * into v_product from pgwallet.investment_products p where p.id = p_product_id;
    if not found then
        perform pgwallet.raise_error('PRODUCT_NOT_FOUND', pg_catalog.format('product %s', p_product_id), 'product_id');
    end if;
    select * into v_wallet from pgwallet.accounts a where a.id = p_wallet_account_id;
    if not found then
        perform pgwallet.raise_error('ACCOUNT_NOT_FOUND', pg_catalog.format('account %s', p_wallet_account_id),
                                     'wallet_account_id');
    end if;
    perform pgwallet.check_request(v_wallet.kind = 'user_wallet', 'wallet_account_id', 'must be a user wallet');
    perform pgwallet.require_active_account(v_wallet.id, v_wallet.status, 'wallet_account_id');
    if v_wallet.currency <> v_product.currency then
        perform pgwallet.raise_error('CURRENCY_MISMATCH',
            pg_catalog.format('wallet %s holds %s, product %s is in %s', v_wallet.id, v_wallet.currency,
                              v_product.id, v_product.currency), 'wallet_account_id');
    end if;
    perform pgwallet.take_rate_limit('create_investment', p_wallet_account_id::text);
    insert into pgwallet.investments (product_id, wallet_account_id, amount)
    values (p_product_id, p_wallet_account_id, p_amount)
    returning * into v_investment;
    return pgwallet.complete_idempotency_key('create_investment', p_idempotency_key, v_request,
                                             pgwallet.investment_json(v_investment));
end
$$;

-- execute_investment: queues the execution of pending investment p_investment_id as a job (kind
-- investment_execution, one per investment) and returns at once with the job id, status queued, the
-- idempotency key and a message. The job moves the money. Rate limit: execute_investment per wallet.
-- Locks: the investment row. Raises: INVALID_REQUEST, FEATURE_DISABLED, INVESTMENT_NOT_FOUND,
-- INVALID_STATE_TRANSITION (not pending), DUPLICATE_REQUEST, RATE_LIMITED.
create or replace function pgwallet.execute_investment(p_investment_id bigint, p_idempotency_key text,
                                                       p_acting_user text default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_request    jsonb;
    v_response   jsonb;
    v_investment pgwallet.investments;
    v_job        jsonb;
begin
    perform pgwallet.require_feature('investment_module_enabled', 'investment_execution_enabled');
    select * into v_investment from pgwallet.investments i where i.id = p_investment_id;  -- its wallet never changes
    if not found then
        perform pgwallet.raise_error('INVESTMENT_NOT_FOUND', pg_catalog.format('investment %s', p_investment_id),
                                     'investment_id');
    end if;
    perform pgwallet.require_owner(v_investment.wallet_account_id, p_acting_user, 'investment_id');
    v_request := jsonb_build_object('investment_id', p_investment_id);
    v_response := pgwallet.claim_idempotency_key('execute_investment', p_idempotency_key, v_request);
    if v_response is not null then
        return v_response;
    end if;
    select * into v_investment from pgwallet.investments i where i.id = p_investment_id for update;
    if not found then
        perform pgwallet.raise_error('INVESTMENT_NOT_FOUND', pg_catalog.format('investment %s', p_investment_id),
                                     'investment_id');
    end if;
    if v_investment.status <> 'pending' then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('investment %s is %s (job %s): only a pending investment is executed', p_investment_id,
                              v_investment.status, v_investment.job_id),
            'investment_id', 'a failed execution is retried by staff: pgwallet jobs retry <job id>');
    end if;
    perform pgwallet.take_rate_limit('execute_investment', v_investment.wallet_account_id::text);
    v_job := pgwallet.add_job('investment_execution', jsonb_build_object('investment_id', p_investment_id),
                                  'investment:' || p_investment_id);
    update pgwallet.investments i
    set status = 'queued', job_id = (v_job->>'job_id')::bigint, queued_at = now()
    where i.id = p_investment_id;
    return pgwallet.complete_idempotency_key('execute_investment', p_idempotency_key, v_request,
        jsonb_build_object('job_id', (v_job->>'job_id')::bigint, 'status', 'queued',
                           'idempotency_key', p_idempotency_key, 'investment_id', p_investment_id,
                           'external_reference', 'investment:' || p_investment_id,
                           'message', pg_catalog.format('investment %s is queued for execution as job %s',
                                                        p_investment_id, v_job->>'job_id'),
                           'replayed', false));
end
$$;

-- get_investment: one investment and its status. Locks nothing. Raises: INVESTMENT_NOT_FOUND.
create or replace function pgwallet.get_investment(p_investment_id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_investment pgwallet.investments;
begin
    select * into v_investment from pgwallet.investments i where i.id = p_investment_id;
    if not found then
        perform pgwallet.raise_error('INVESTMENT_NOT_FOUND', pg_catalog.format('investment %s', p_investment_id),
                                     'investment_id');
    end if;
    return pgwallet.investment_json(v_investment);
end
$$;

-- fail_refused_job: fails job p_job_id of lease holder p_worker at once, with last_error = the catalogued
-- code of p_sqlstate and p_detail: a refusal of the ledger that retrying cannot change (no money, a
-- frozen account). For the job bodies. Locks: the job row. Raises: as fail_job.
create or replace function pgwallet.fail_refused_job(p_job_id bigint, p_worker text, p_sqlstate text,
                                                     p_detail text)
returns jsonb
language sql
security definer
set search_path = pgwallet, pg_temp
as $$
    select pgwallet.fail_job(p_job_id, p_worker,
        coalesce((select e.code from pgwallet.error_catalogue e where e.sqlstate = p_sqlstate), p_sqlstate)
        || ': ' || coalesce(p_detail, ''), true)
$$;

-- run_investment_execution: the body of an investment_execution job, run by the worker p_worker that
-- holds its lease, in one transaction: moves the amount from the investor's wallet to the product's
-- account (post_legs, idempotency key investment:<id> in scope investment_execution), marks the
-- investment executed and completes the job. Run again (a rescued job), it moves nothing: the
-- investment is already executed. A refusal of the ledger (INSUFFICIENT_FUNDS, ACCOUNT_FROZEN, ...)
-- cannot change by retrying in seconds: the job fails at once with the code as last_error. With a
-- feature flag off, the job is deferred (no attempt used). Locks: the job row, the investment row,
-- then the accounts (see post_legs). Raises: INVALID_REQUEST, JOB_NOT_FOUND, INVALID_STATE_TRANSITION
-- (lease lost).
create or replace function pgwallet.run_investment_execution(p_job_id bigint, p_worker text)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_job        pgwallet.jobs;
    v_investment pgwallet.investments;
    v_product    pgwallet.investment_products;
    v_request    jsonb;
    v_done       jsonb;
    v_posted     record;
    v_detail     text;
begin
    v_job := pgwallet.lock_leased_job(p_job_id, p_worker);
    perform pgwallet.check_request(v_job.kind = 'investment_execution', 'job_id',
                                   'must be a job of kind investment_execution');
    if not (pgwallet.feature_enabled('investment_module_enabled')
            and pgwallet.feature_enabled('investment_execution_enabled')) then
        return pgwallet.defer_job(p_job_id, p_worker, 'deferred: FEATURE_DISABLED (investment execution is off)');
    end if;
    select * into v_investment from pgwallet.investments i
    where i.id = (v_job.payload->>'investment_id')::bigint for update;
    if not found or v_investment.job_id is distinct from p_job_id then
        return pgwallet.fail_job(p_job_id, p_worker,
            pg_catalog.format('INVESTMENT_NOT_FOUND: job %s executes no investment', p_job_id), true);
    end if;
    if v_investment.status = 'executed' then
        return pgwallet.complete_job(p_job_id, p_worker, jsonb_build_object(
            'investment_id', v_investment.id, 'transfer_id', v_investment.transfer_id, 'amount', v_investment.amount));
    end if;
    select * into v_product from pgwallet.investment_products p where p.id = v_investment.product_id;
    v_request := jsonb_build_object('investment_id', v_investment.id, 'wallet_account_id',
                                    v_investment.wallet_account_id, 'amount', v_investment.amount);
    v_done := pgwallet.claim_idempotency_key('investment_execution', 'investment:' || v_investment.id, v_request);
    if v_done is null then
        begin
            v_posted := pgwallet.post_legs(nextval('pgwallet.operation_id_seq'), 'investment',
                                           array[v_investment.wallet_account_id], array[v_product.account_id],
                                           array[v_investment.amount],
                                           jsonb_build_object('investment_id', v_investment.id,
                                                              'product_id', v_product.id, 'job_id', p_job_id));
        exception when others then
            if sqlstate not like 'W%' then
                raise;  -- not a refusal: the worker fails the attempt, retried after the backoff
            end if;
            get stacked diagnostics v_detail = pg_exception_detail;
            return pgwallet.fail_refused_job(p_job_id, p_worker, sqlstate, v_detail);
        end;
        v_done := pgwallet.complete_idempotency_key('investment_execution', 'investment:' || v_investment.id,
            v_request, jsonb_build_object('transfer_id', v_posted.transfer_ids[1]));
    end if;
    update pgwallet.investments i
    set status = 'executed', transfer_id = (v_done->>'transfer_id')::bigint, executed_at = now(), error = null
    where i.id = v_investment.id;
    return pgwallet.complete_job(p_job_id, p_worker, jsonb_build_object(
        'investment_id', v_investment.id, 'transfer_id', (v_done->>'transfer_id')::bigint,
        'amount', v_investment.amount));
end
$$;

-- distribute_dividend: queues a dividend of p_amount for the holders of product p_product_id (a job
-- of kind dividend) and returns at once with the job id, status queued, the idempotency key and a
-- message. The job pays the holders pro rata to their executed investments, from the product's
-- dividend account (which must hold the amount), through a payout job. Rate limit: distribute_dividend
-- per staff member p_staff_id. Locks: nothing but the new rows. Raises: INVALID_REQUEST, FEATURE_DISABLED,
-- PRODUCT_NOT_FOUND, INVALID_STATE_TRANSITION (no holder yet), INSUFFICIENT_FUNDS, DUPLICATE_REQUEST,
-- RATE_LIMITED.
create or replace function pgwallet.distribute_dividend(p_product_id bigint, p_amount bigint,
                                                        p_idempotency_key text, p_staff_id bigint)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_request  jsonb;
    v_response jsonb;
    v_product  pgwallet.investment_products;
    v_account  pgwallet.account_balances;
    v_dividend pgwallet.dividends;
    v_job      jsonb;
    v_staff    pgwallet.staff;
begin
    perform pgwallet.check_request(p_amount > 0, 'amount', 'must be a positive whole number of minor units');
    v_staff := pgwallet.require_staff(p_staff_id);
    perform pgwallet.require_feature('investment_module_enabled', 'dividend_distribution_enabled');
    v_request := jsonb_build_object('product_id', p_product_id, 'amount', p_amount, 'staff_id', p_staff_id);
    v_response := pgwallet.claim_idempotency_key('distribute_dividend', p_idempotency_key, v_request);
    if v_response is not null then
        return v_response;
    end if;
    select * into v_product from pgwallet.investment_products p where p.id = p_product_id;
    if not found then
        perform pgwallet.raise_error('PRODUCT_NOT_FOUND', pg_catalog.format('product %s', p_product_id), 'product_id');
    end if;
    if not exists (select 1 from pgwallet.investments i where i.product_id = p_product_id and i.status = 'executed')
    then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('product %s has no executed investment: nobody to pay', p_product_id), 'product_id');
    end if;
    select * into v_account from pgwallet.account_balances b where b.id = v_product.dividend_account_id;
    if v_account.available < p_amount then
        perform pgwallet.raise_error('INSUFFICIENT_FUNDS',
            pg_catalog.format('dividend account %s has %s available, the dividend is %s', v_account.id,
                              v_account.available, p_amount), 'amount',
            'fund the dividend account first');
    end if;
    perform pgwallet.take_rate_limit('distribute_dividend', 'staff:' || p_staff_id);
    insert into pgwallet.dividends (product_id, amount, created_by)
    values (p_product_id, p_amount, pgwallet.staff_label(v_staff))
    returning * into v_dividend;
    v_job := pgwallet.add_job('dividend', jsonb_build_object('dividend_id', v_dividend.id),
                                  'dividend:' || v_dividend.id);
    update pgwallet.dividends d set job_id = (v_job->>'job_id')::bigint where d.id = v_dividend.id;
    return pgwallet.complete_idempotency_key('distribute_dividend', p_idempotency_key, v_request,
        jsonb_build_object('job_id', (v_job->>'job_id')::bigint, 'status', 'queued',
                           'idempotency_key', p_idempotency_key, 'dividend_id', v_dividend.id,
                           'message', pg_catalog.format('dividend %s of product %s is queued as job %s',
                                                        v_dividend.id, p_product_id, v_job->>'job_id'),
                           'replayed', false));
end
$$;

-- run_dividend: the body of a dividend job, run by the lease holder p_worker, in one transaction:
-- the holders are the wallets with executed investments in the product, each with a share equal to
-- its executed amount; one payout job (challenge dividend:<id>, pool = the dividend account, no fee)
-- splits the amount among them exactly by largest remainder, and the payout workers pay them. Run
-- again, it creates nothing more. No holder, or a refusal (INSUFFICIENT_FUNDS, a frozen dividend
-- account): the job fails at once. With a feature flag off, the job is deferred. Locks: the job row,
-- the dividend row, then as create_payout_job. Raises: INVALID_REQUEST, JOB_NOT_FOUND,
-- INVALID_STATE_TRANSITION (lease lost).
create or replace function pgwallet.run_dividend(p_job_id bigint, p_worker text)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_job      pgwallet.jobs;
    v_dividend pgwallet.dividends;
    v_product  pgwallet.investment_products;
    v_winners  jsonb;
    v_holders  integer;
    v_payout   jsonb;
    v_detail   text;
begin
    v_job := pgwallet.lock_leased_job(p_job_id, p_worker);
    perform pgwallet.check_request(v_job.kind = 'dividend', 'job_id', 'must be a job of kind dividend');
    if not (pgwallet.feature_enabled('investment_module_enabled')
            and pgwallet.feature_enabled('dividend_distribution_enabled')) then
        return pgwallet.defer_job(p_job_id, p_worker, 'deferred: FEATURE_DISABLED (dividend distribution is off)');
    end if;
    select * into v_dividend from pgwallet.dividends d
    where d.id = (v_job.payload->>'dividend_id')::bigint for update;
    if not found or v_dividend.job_id is distinct from p_job_id then
        return pgwallet.fail_job(p_job_id, p_worker,
            pg_catalog.format('DIVIDEND_NOT_FOUND: job %s pays no dividend', p_job_id), true);
    end if;
    if v_dividend.status = 'distributing' then
        return pgwallet.complete_job(p_job_id, p_worker, jsonb_build_object(
            'dividend_id', v_dividend.id, 'payout_job_id', v_dividend.payout_job_id, 'holders', v_dividend.holders));
    end if;
    select * into v_product from pgwallet.investment_products p where p.id = v_dividend.product_id;
    select jsonb_agg(jsonb_build_object('account_id', h.wallet_account_id, 'share', h.share)
                     order by h.wallet_account_id), count(*)
    into v_winners, v_holders
    from (select i.wallet_account_id, sum(i.amount) as share from pgwallet.investments i
          where i.product_id = v_product.id and i.status = 'executed'
          group by i.wallet_account_id) h;
    if v_holders = 0 then
        update pgwallet.dividends d set holders = 0 where d.id = v_dividend.id;
        return pgwallet.fail_job(p_job_id, p_worker,
            pg_catalog.format('INVALID_STATE_TRANSITION: product %s has no executed investment', v_product.id), true);
    end if;
    begin
        v_payout := pgwallet.start_payout_job('dividend_payout', 'dividend:' || v_dividend.id,
                                              v_product.dividend_account_id, v_dividend.amount, 0, v_winners,
                                              'dividend:' || v_dividend.id);
    exception when others then
        if sqlstate not like 'W%' then
            raise;
        end if;
        get stacked diagnostics v_detail = pg_exception_detail;
        return pgwallet.fail_refused_job(p_job_id, p_worker, sqlstate, v_detail);
    end;
    update pgwallet.dividends d
    set status = 'distributing', payout_job_id = (v_payout->>'job_id')::bigint, holders = v_holders, error = null
    where d.id = v_dividend.id;
    return pgwallet.complete_job(p_job_id, p_worker, jsonb_build_object(
        'dividend_id', v_dividend.id, 'payout_job_id', (v_payout->>'job_id')::bigint, 'holders', v_holders));
end
$$;

-- get_dividend: one dividend, its job's status and its payout's progress. Locks nothing.
-- Raises: DIVIDEND_NOT_FOUND.
create or replace function pgwallet.get_dividend(p_dividend_id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_dividend pgwallet.dividends;
begin
    select * into v_dividend from pgwallet.dividends d where d.id = p_dividend_id;
    if not found then
        perform pgwallet.raise_error('DIVIDEND_NOT_FOUND', pg_catalog.format('dividend %s', p_dividend_id),
                                     'dividend_id');
    end if;
    return pgwallet.dividend_json(v_dividend);
end
$$;

-- follow_job_status: trigger on pgwallet.jobs (jobs_follow_status, fired only when an investment or
-- dividend job becomes queued, failed or cancelled): the investment or dividend follows its job (a
-- retry queues it again, a failure keeps the job's last error); executed and distributing are written
-- by the job bodies. Locks: the investment or dividend row (after the job row: the usual order).
create or replace function pgwallet.follow_job_status()
returns trigger
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    if new.kind = 'investment_execution' then
        update pgwallet.investments i
        set status = new.status, error = case when new.status = 'queued' then i.error else new.last_error end
        where i.job_id = new.id and i.status not in ('executed', new.status);
    elsif new.kind = 'dividend' then
        update pgwallet.dividends d
        set status = new.status, error = case when new.status = 'queued' then d.error else new.last_error end
        where d.job_id = new.id and d.status not in ('distributing', 'distributed', new.status);
    end if;
    return null;
end
$$;

create or replace trigger jobs_follow_status
    after update of status on pgwallet.jobs
    for each row
    when (old.status is distinct from new.status and new.status in ('queued', 'failed', 'cancelled')
          and new.kind in ('investment_execution', 'dividend'))
    execute function pgwallet.follow_job_status();

-- follow_dividend_payout: trigger on pgwallet.payout_jobs (payout_jobs_dividend_distributed, fired only when a
-- dividend's payout job, challenge dividend:<id>, becomes completed): the dividend becomes 'distributed'.
-- Locks: the dividend row (after the job row).
create or replace function pgwallet.follow_dividend_payout()
returns trigger
language plpgsql
set search_path = pgwallet, pg_temp
as $$
begin
    update pgwallet.dividends d set status = 'distributed'
    where d.payout_job_id = new.id and d.status = 'distributing';
    return null;
end
$$;

create or replace trigger payout_jobs_dividend_distributed
    after update of status on pgwallet.payout_jobs
    for each row
    when (new.status = 'completed' and old.status is distinct from 'completed' and new.challenge_id like 'dividend:%')
    execute function pgwallet.follow_dividend_payout();

-- What each role may call: edge functions create and execute investments and read products,
-- investments, dividends, jobs and flags; staff create products, distribute dividends, run the job
-- bodies (workers), switch flags and limits, purge.
grant execute on function
    pgwallet.create_investment(bigint, bigint, bigint, text, text),
    pgwallet.execute_investment(bigint, text, text),
    pgwallet.get_investment(bigint),
    pgwallet.get_investment_product(bigint),
    pgwallet.get_dividend(bigint),
    pgwallet.list_feature_flags(),
    pgwallet.list_rate_limits()
    to pgwallet_app;
grant execute on function
    pgwallet.create_investment_product(text, text, bigint, text),
    pgwallet.distribute_dividend(bigint, bigint, text, bigint),
    pgwallet.set_feature_flag(text, boolean, bigint),
    pgwallet.purge_rate_limit_hits(integer)
    to pgwallet_staff;
grant execute on function
    pgwallet.run_investment_execution(bigint, text),
    pgwallet.run_dividend(bigint, text)
    to pgwallet_worker;
grant execute on function pgwallet.set_rate_limit(text, integer, integer) to pgwallet_admin;
