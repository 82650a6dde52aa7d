-- Batched payouts: a challenge's prize pool paid to its winners in set-based batches.
-- create_payout_job covers the pool with a hold paid out in parts (pgwallet.place_parts_hold) and
-- writes one entry per winner; process_payout_batch pays up to batch_size pending entries in one
-- transaction through pgwallet.pay_hold_parts (one INSERT ... SELECT for the transfers, one for the
-- entries, one UPDATE for the winners' balances). Lock order: the job's gate and row (shared by the
-- batches of a job, exclusive for cancel and retry), its entries, the winners by ascending id, the pool
-- account, the hold. Batches of one job overlap: only their short debit side (the pool's entries and
-- balance, the hold, the job's counters) queues. A batch commits or leaves nothing behind, so a killed worker
-- loses nothing and a restarted one pays each pending entry exactly once.

-- payout_job_json: the public view of a job (its status and counters). Locks nothing.
create or replace function pgwallet.payout_job_json(p_job pgwallet.payout_jobs)
returns jsonb
language sql
stable
set search_path = pgwallet, pg_temp
as $$
    select jsonb_build_object(
        'job_id', p_job.id, 'challenge_id', p_job.challenge_id, 'status', p_job.status,
        'pool_account_id', p_job.pool_account_id, 'fee_account_id', p_job.fee_account_id,
        'currency', p_job.currency, 'total_pool', p_job.total_pool, 'platform_fee_bps', p_job.platform_fee_bps,
        'platform_fee', p_job.platform_fee, 'payout_total', p_job.payout_total, 'hold_id', p_job.hold_id,
        'total_winners', p_job.total_winners, 'processed_winners', p_job.processed_winners,
        'paid_winners', p_job.paid_winners, 'failed_winners', p_job.failed_winners,
        'cancelled_winners', p_job.cancelled_winners,
        'pending_winners', p_job.total_winners - p_job.paid_winners - p_job.failed_winners - p_job.cancelled_winners,
        'paid_amount', p_job.paid_amount,
        'progress_percent', case when p_job.total_winners = 0 then 100.0
                                 else round(100.0 * (p_job.paid_winners + p_job.failed_winners + p_job.cancelled_winners)
                                            / p_job.total_winners, 2) end,
        'error', p_job.error, 'created_at', p_job.created_at, 'started_at', p_job.started_at,
        'completed_at', p_job.completed_at, 'paused_at', p_job.paused_at, 'replayed', false)
$$;

-- check_winners: reads a winner list (a JSON array of {account_id, share} or of {account_id, amount},
-- one form, each account once; shares whole numbers >= 0, amounts whole minor units > 0) in one pass
-- and returns its accounts and shares (or amounts) as arrays in list order, the form, and their total.
-- Keys other than these three are ignored; every value must be a JSON number. Locks nothing.
-- Raises: INVALID_REQUEST.
create or replace function pgwallet.check_winners(p_winners jsonb, out accounts bigint[], out amounts bigint[],
                                                  out by_amount boolean, out total numeric)
language plpgsql
stable
set search_path = pgwallet, pg_temp
as $$
declare
    v_rule     text := 'each winner is {account_id, share} (a whole number >= 0) or {account_id, amount} '
                       '(minor units > 0), all of one form';
    v_shares   bigint[];
    v_amounts  bigint[];
    v_count    integer;
    v_bad      boolean;
begin
    perform pgwallet.check_request(
        jsonb_typeof(p_winners) = 'array' and jsonb_array_length(p_winners) <= 1000000
        and not jsonb_path_exists(p_winners, 'strict $[*] ? (@.type() != "object")'),
        'winners', 'must be a JSON array of at most 1,000,000 winner objects');
    perform pgwallet.check_request(not jsonb_path_exists(p_winners, 'strict $[*].* ? (@.type() != "number")'),
                                   'winners', v_rule);
    begin
        select coalesce(array_agg(w.account_id), '{}'), coalesce(array_agg(w.share), '{}'),
               coalesce(array_agg(w.amount), '{}')
        into accounts, v_shares, v_amounts
        from jsonb_to_recordset(p_winners) as w(account_id bigint, share bigint, amount bigint);
    exception when invalid_text_representation or numeric_value_out_of_range then
        perform pgwallet.raise_error('INVALID_REQUEST', 'winners: ' || v_rule, 'winners');
    end;
    v_count := cardinality(accounts);
    by_amount := v_count > 0 and v_amounts[1] is not null;
    amounts := case when by_amount then v_amounts else v_shares end;
    select bool_or(u.a is null or u.a not between 1 and 999999999999999999 or u.v is null
                   or u.v not between case when by_amount then 1 else 0 end and 999999999999999999
                   or u.other is not null),
           sum(u.v)
    into v_bad, total
    from unnest(accounts, amounts, case when by_amount then v_shares else v_amounts end) u(a, v, other);
    perform pgwallet.check_request(v_bad is not true, 'winners', v_rule);
    perform pgwallet.check_request((select count(distinct u.a) from unnest(accounts) u(a)) = v_count, 'winners',
                                   'must name each account once');
end
$$;

-- split_payout: each winner with its exact share of p_payout (in no particular order), by largest
-- remainder: each winner gets floor(payout * share / p_total_shares), the units left over go one each
-- to the largest remainders, ties to the earlier winner in the list, so the amounts add up to
-- p_payout exactly. Locks nothing.
create or replace function pgwallet.split_payout(p_accounts bigint[], p_shares bigint[], p_total_shares numeric,
                                                 p_payout bigint)
returns table (account_id bigint, amount bigint)
language sql
stable
set search_path = pgwallet, pg_temp
as $$
    with s as (
        select u.a, u.o, div(p_payout::numeric * u.v, p_total_shares) as base,
               mod(p_payout::numeric * u.v, p_total_shares) as remainder
        from unnest(p_accounts, p_shares) with ordinality u(a, v, o)
    ), ranked as (
        select s.a, s.base, row_number() over (order by s.remainder desc, s.o) as r, sum(s.base) over () as based
        from s
    )
    select ranked.a, (ranked.base + case when ranked.r <= p_payout - ranked.based then 1 else 0 end)::bigint
    from ranked
$$;

-- create_payout_job: pays p_total_pool of p_pool_account_id to p_winners (see check_winners and
-- split_payout) once per idempotency key and once per challenge: the platform fee (p_platform_fee_bps
-- of the pool, rounded down) goes to p_fee_account_id at once (or stays in the pool when none is
-- given), the rest is held on the pool for the job and one pending entry is written per winner;
-- workers pay them. Returns at once. A draw (no winner, or every share 0) completes the job at once
-- and moves nothing. A winner account that is frozen or closed is accepted: its entry fails alone.
-- Locks: a transaction advisory lock on the challenge, the pool and fee accounts by ascending id.
-- Raises: INVALID_REQUEST, ACCOUNT_NOT_FOUND, ACCOUNT_FROZEN, ACCOUNT_CLOSED, CURRENCY_MISMATCH,
-- INSUFFICIENT_FUNDS, DUPLICATE_REQUEST.
-- The body is start_payout_job (internal: dividends call it under their own scope and challenge
-- namespace); create_payout_job is the staff's door to it.
create or replace function pgwallet.start_payout_job(
    p_scope            text,
    p_challenge_id     text,
    p_pool_account_id  bigint,
    p_total_pool       bigint,
    p_platform_fee_bps integer,
    p_winners          jsonb,
    p_idempotency_key  text,
    p_fee_account_id   bigint default null)
returns jsonb
language plpgsql
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_request  jsonb;
    v_response jsonb;
    v_list     record;
    v_pool     pgwallet.accounts;
    v_fee_acct pgwallet.accounts;
    v_fee      bigint;
    v_payout   bigint;
    v_job      pgwallet.payout_jobs;
    v_bad      record;
    v_zero     bigint;
    v_hold     pgwallet.holds;
begin
    perform pgwallet.check_request(length(p_challenge_id) between 1 and 200, 'challenge_id', 'must be 1 to 200 characters');
    perform pgwallet.check_request(p_total_pool > 0, 'total_pool', 'must be a positive whole number of minor units');
    perform pgwallet.check_request(p_platform_fee_bps between 0 and 10000, 'platform_fee_bps',
                                   'must be 0 to 10000 basis points');
    perform pgwallet.check_request(p_fee_account_id is distinct from p_pool_account_id, 'fee_account_id',
                                   'must differ from pool_account_id');
    v_list := pgwallet.check_winners(p_winners);
    if coalesce(v_list.total, 0) = 0 then
        v_fee := 0;  -- a draw (no winner, or no share): nothing moves
        v_payout := 0;
    else
        v_fee := div(p_total_pool::numeric * p_platform_fee_bps, 10000)::bigint;
        v_payout := p_total_pool - v_fee;
    end if;
    perform pgwallet.check_request(not v_list.by_amount or v_list.total = v_payout, 'winners',
        pg_catalog.format('amounts must add up to the pool minus the fee: %s, not %s', v_payout, v_list.total));
    -- the winners enter the request by their hash: the request is hashed twice, the list once
    v_request := jsonb_build_object('challenge_id', p_challenge_id, 'pool_account_id', p_pool_account_id,
                                    'total_pool', p_total_pool, 'platform_fee_bps', p_platform_fee_bps,
                                    'winners_md5', md5(p_winners::text), 'fee_account_id', p_fee_account_id);
    v_response := pgwallet.claim_idempotency_key(p_scope, p_idempotency_key, v_request);
    if v_response is not null then
        return v_response;
    end if;

    -- one job per challenge: a concurrent creation for the same challenge waits here, then is refused
    perform pg_catalog.pg_advisory_xact_lock(1885828980, pg_catalog.hashtext('payout/' || p_challenge_id));
    if exists (select 1 from pgwallet.payout_jobs j where j.challenge_id = p_challenge_id) then
        perform pgwallet.raise_error('DUPLICATE_REQUEST',
            pg_catalog.format('challenge %s already has a payout job', p_challenge_id), 'challenge_id',
            'a challenge is paid once');
    end if;

    perform 1 from pgwallet.accounts a
    where a.id in (p_pool_account_id, p_fee_account_id) and not a.collector
    order by a.id
    for update;
    select * into v_pool from pgwallet.accounts a where a.id = p_pool_account_id;
    if not found then
        perform pgwallet.raise_error('ACCOUNT_NOT_FOUND', pg_catalog.format('account %s', p_pool_account_id),
                                     'pool_account_id');
    end if;
    perform pgwallet.check_request(not v_pool.collector, 'pool_account_id',
                                   'must be an ordinary account (a hold covers the pool)');
    perform pgwallet.require_active_account(v_pool.id, v_pool.status, 'pool_account_id');
    if p_fee_account_id is not null then
        select * into v_fee_acct from pgwallet.accounts a where a.id = p_fee_account_id;
        if not found then
            perform pgwallet.raise_error('ACCOUNT_NOT_FOUND', pg_catalog.format('account %s', p_fee_account_id),
                                         'fee_account_id');
        end if;
        perform pgwallet.require_active_account(v_fee_acct.id, v_fee_acct.status, 'fee_account_id');
        if v_fee_acct.currency <> v_pool.currency then
            perform pgwallet.raise_error('CURRENCY_MISMATCH',
                pg_catalog.format('account %s holds %s, the pool holds %s', v_fee_acct.id, v_fee_acct.currency,
                                  v_pool.currency), 'fee_account_id');
        end if;
    end if;
    if v_payout > 0 and not v_pool.allow_negative and v_pool.balance - v_pool.held < p_total_pool then
        perform pgwallet.raise_error('INSUFFICIENT_FUNDS',
            pg_catalog.format('pool account %s has %s available, the pool is %s', v_pool.id,
                              v_pool.balance - v_pool.held, p_total_pool), 'total_pool');
    end if;

    insert into pgwallet.payout_jobs (challenge_id, pool_account_id, fee_account_id, currency, total_pool,
                                      platform_fee_bps, platform_fee, payout_total, total_winners)
    values (p_challenge_id, p_pool_account_id, p_fee_account_id, v_pool.currency, p_total_pool, p_platform_fee_bps,
            v_fee, v_payout, case when coalesce(v_list.total, 0) = 0 then 0 else cardinality(v_list.accounts) end)
    returning * into v_job;
    if v_job.total_winners > 0 then
        if v_list.by_amount then
            insert into pgwallet.payout_entries (job_id, account_id, amount)
            select v_job.id, u.account_id, u.amount from unnest(v_list.accounts, v_list.amounts) u(account_id, amount);
        else
            -- a share worth less than one minor unit gets nothing: its entry is done at once
            with ins as (
                insert into pgwallet.payout_entries (job_id, account_id, amount, status, processed_at)
                select v_job.id, s.account_id, s.amount, case when s.amount = 0 then 'completed' else 'pending' end,
                       case when s.amount = 0 then now() end
                from pgwallet.split_payout(v_list.accounts, v_list.amounts, v_list.total, v_payout) s
                returning amount
            )
            select count(*) filter (where ins.amount = 0) into v_zero from ins;
        end if;
        -- every winner: an existing ordinary account of the pool's currency, not the pool (frozen or
        -- closed ones are accepted: their entry fails alone when it is paid)
        select u.account_id, a.id is null as missing, a.currency into v_bad
        from unnest(v_list.accounts) u(account_id)
        left join pgwallet.accounts a on a.id = u.account_id
        where a.id is null or a.collector or a.currency <> v_pool.currency or a.id = v_pool.id
        limit 1;
        if found then
            if v_bad.missing then
                perform pgwallet.raise_error('ACCOUNT_NOT_FOUND',
                    pg_catalog.format('winner account %s', v_bad.account_id), 'winners');
            elsif v_bad.currency <> v_pool.currency then
                perform pgwallet.raise_error('CURRENCY_MISMATCH',
                    pg_catalog.format('winner account %s holds %s, the pool holds %s', v_bad.account_id,
                                      v_bad.currency, v_pool.currency), 'winners');
            else
                perform pgwallet.raise_error('INVALID_REQUEST',
                    pg_catalog.format('winners: account %s is the pool or a collector account', v_bad.account_id),
                    'winners');
            end if;
        end if;
    end if;
    if v_fee > 0 and p_fee_account_id is not null then
        perform pgwallet.post_legs(nextval('pgwallet.operation_id_seq'), 'payout_fee', array[p_pool_account_id],
                                   array[p_fee_account_id], array[v_fee],
                                   jsonb_build_object('payout_job_id', v_job.id, 'challenge_id', p_challenge_id));
    end if;
    if v_payout > 0 then
        v_hold := pgwallet.place_parts_hold(p_pool_account_id, v_payout,
                                            jsonb_build_object('payout_job_id', v_job.id, 'challenge_id', p_challenge_id));
    end if;
    v_zero := coalesce(v_zero, 0);
    update pgwallet.payout_jobs j
    set hold_id = v_hold.id, paid_winners = v_zero, processed_winners = v_zero,
        status = case when v_zero = j.total_winners then 'completed' else 'queued' end,
        started_at = case when v_zero = j.total_winners then now() end,
        completed_at = case when v_zero = j.total_winners then now() end
    where j.id = v_job.id
    returning * into v_job;
    if v_job.status = 'queued' then
        perform pg_catalog.pg_notify('pgwallet_payouts', v_job.id::text);
    end if;
    return pgwallet.complete_idempotency_key(p_scope, p_idempotency_key, v_request,
                                             pgwallet.payout_job_json(v_job));
end
$$;

-- create_payout_job: start_payout_job for a challenge of the caller's (challenge ids beginning 'dividend:'
-- belong to dividends), from a pool that may not go negative (paying out of one is an admin's funding).
-- Staff. Locks: see start_payout_job. Raises: FORBIDDEN, as start_payout_job.
create or replace function pgwallet.create_payout_job(
    p_challenge_id     text,
    p_pool_account_id  bigint,
    p_total_pool       bigint,
    p_platform_fee_bps integer,
    p_winners          jsonb,
    p_idempotency_key  text,
    p_fee_account_id   bigint default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_request(p_challenge_id not like 'dividend:%', 'challenge_id',
                                   'challenge ids beginning dividend: belong to dividends');
    if exists (select 1 from pgwallet.accounts a where a.id = p_pool_account_id and a.allow_negative) then
        perform pgwallet.raise_error('FORBIDDEN', pg_catalog.format(
            'account %s may go negative: only an admin moves money out of it (fund_account)', p_pool_account_id),
            'pool_account_id');
    end if;
    return pgwallet.start_payout_job('create_payout_job', p_challenge_id, p_pool_account_id, p_total_pool,
                                     p_platform_fee_bps, p_winners, p_idempotency_key, p_fee_account_id);
end
$$;

-- finish_payout_job: the job's status once nothing is pending: completed, or completed_with_errors
-- while failed entries wait for a retry. The caller holds the job row. Locks nothing more.
create or replace function pgwallet.finish_payout_job(p_job pgwallet.payout_jobs)
returns pgwallet.payout_jobs
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_job pgwallet.payout_jobs := p_job;
begin
    if v_job.status in ('queued', 'running')
       and v_job.paid_winners + v_job.failed_winners + v_job.cancelled_winners = v_job.total_winners then
        update pgwallet.payout_jobs j
        set status = case when v_job.failed_winners = 0 then 'completed' else 'completed_with_errors' end,
            completed_at = now()
        where j.id = v_job.id
        returning * into v_job;
    end if;
    return v_job;
end
$$;

-- payout_clocks: the ledger's operation counter and the payout batch counter, as they stand. A batch that
-- pays takes one value of each, so between two readings (operations - batches) counts the money
-- movements that were not payout batches: the traffic a worker gives way to. Locks nothing.
create or replace function pgwallet.payout_clocks()
returns jsonb
language sql
volatile
set search_path = pgwallet, pg_temp
as $$
    select jsonb_build_object('operations_seen', (select s.last_value from pgwallet.operation_id_seq s),
                              'batches_seen', (select s.last_value from pgwallet.payout_batches_seq s))
$$;

-- share_payout_job: a batch's share of the job's gate (a transaction advisory lock on the job id), taken
-- before the job row. Row locks alone would not do: a FOR UPDATE waiter does not hold back new FOR KEY
-- SHARE lockers, so batches taking turns could keep a cancel waiting until the job is paid; the lock
-- manager queues a new batch behind a waiting cancel. Locks: the gate, shared. Raises nothing.
create or replace function pgwallet.share_payout_job(p_job_id bigint)
returns void
language sql
set search_path = pgwallet, pg_temp
as $$
    select pg_catalog.pg_advisory_xact_lock_shared(1885828980, pg_catalog.hashtext('payout_jobs/' || p_job_id))
$$;

-- take_payout_job: the job's gate alone, then its row, for retry, cancel, pause and resume: they wait for the
-- batches in flight, and later batches wait for them. Locks: the gate, exclusive, then the job row.
-- Raises: PAYOUT_JOB_NOT_FOUND.
drop function if exists pgwallet.take_payout_job(bigint);  -- it returned void before it returned the job
create or replace function pgwallet.take_payout_job(p_job_id bigint)
returns pgwallet.payout_jobs
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_job pgwallet.payout_jobs;
begin
    perform pg_catalog.pg_advisory_xact_lock(1885828980, pg_catalog.hashtext('payout_jobs/' || p_job_id));
    select * into v_job from pgwallet.payout_jobs j where j.id = p_job_id for update;
    if not found then
        perform pgwallet.raise_error('PAYOUT_JOB_NOT_FOUND', pg_catalog.format('payout job %s', p_job_id), 'job_id');
    end if;
    return v_job;
end
$$;

-- process_payout_batch: pays up to p_batch_size pending entries of job p_job_id in one transaction,
-- set-based (pgwallet.pay_hold_parts); an entry whose winner is frozen, closed or gone fails alone
-- (status failed, error = the code) and the batch goes on. Advances the job's counters and finishes
-- it when nothing is pending. A job that is not queued or running is left alone (processed 0).
-- When the pool account itself is frozen or closed the job fails (status failed, error recorded)
-- and waits for retry_failed_payout_entries or cancel_payout_job.
-- Locks: the job's gate shared, the job row FOR KEY SHARE (batches of one job run side by side; cancel
-- and retry wait for them), its pending entries (FOR UPDATE SKIP LOCKED), the winners by ascending id,
-- then the pool account (taken when free, never queued for: see pay_hold_parts), the hold and the job
-- row for the counters. Raises: INVALID_REQUEST, PAYOUT_JOB_NOT_FOUND, serialization_failure (40001: the pool
-- stayed locked for 500 ms; nothing was paid, retry the batch).
create or replace function pgwallet.process_payout_batch(p_job_id bigint, p_batch_size integer default 500)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
set plan_cache_mode = force_generic_plan
-- once most entries are completed, the planner believes few are pending and reads the whole job through
-- a bitmap (500 ms for a million entries) instead of walking the job's index from the cursor (1 ms)
set enable_bitmapscan = off
as $$
declare
    v_job      pgwallet.payout_jobs;
    v_pool     text;
    v_ids      bigint[];
    v_accounts bigint[];
    v_amounts  bigint[];
    v_transfers bigint[];
    v_failed_ids bigint[];
    v_errors   text[];
    v_paid     integer := 0;
    v_failed   integer := 0;
    v_amount   bigint := 0;
    v_count    integer := 0;
begin
    p_batch_size := coalesce(p_batch_size, 500);
    perform pgwallet.check_request(p_batch_size between 1 and 10000, 'batch_size', 'must be 1 to 10000');
    perform pgwallet.share_payout_job(p_job_id);
    select * into v_job from pgwallet.payout_jobs j where j.id = p_job_id for key share;
    if not found then
        perform pgwallet.raise_error('PAYOUT_JOB_NOT_FOUND', pg_catalog.format('payout job %s', p_job_id), 'job_id');
    end if;
    if v_job.status in ('queued', 'running') then
        select a.status into v_pool from pgwallet.accounts a where a.id = v_job.pool_account_id;
        if v_pool <> 'active' then
            update pgwallet.payout_jobs j
            set status = 'failed', error = pg_catalog.format('%s: pool account %s is %s',
                    case v_pool when 'frozen' then 'ACCOUNT_FROZEN' else 'ACCOUNT_CLOSED' end, v_job.pool_account_id,
                    v_pool), completed_at = now()
            where j.id = p_job_id
            returning * into v_job;
            return pgwallet.payout_job_json(v_job) || jsonb_build_object('processed', 0, 'paid', 0, 'failed', 0);
        end if;
        -- take the entries and mark them paid with their transfer ids in one write; the few refused
        -- below are marked failed instead (all in this one transaction)
        -- from the job's cursor on (entries locked by a batch in flight are skipped); should a pending
        -- entry have been passed by (a batch rolled back), an empty look starts again from the top
        loop
            with picked as (
                select x.id from pgwallet.payout_entries x
                where x.job_id = p_job_id and (x.job_id, x.id) > (p_job_id, v_job.next_entry_id)  -- the job's index
                  and x.status = 'pending'
                order by x.job_id, x.id
                limit p_batch_size
                for update skip locked
            ), marked as (
                update pgwallet.payout_entries e
                set status = 'completed', transfer_id = nextval('pgwallet.transfers_id_seq'),
                    attempts = e.attempts + 1, error = null, processed_at = now()
                from picked
                where e.id = picked.id
                returning e.id, e.account_id, e.amount, e.transfer_id
            )
            select array_agg(m.id), array_agg(m.account_id), array_agg(m.amount), array_agg(m.transfer_id)
            into v_ids, v_accounts, v_amounts, v_transfers
            from (select * from marked order by marked.id) m;  -- sorted once; the arrays stay aligned
            v_count := coalesce(array_length(v_ids, 1), 0);
            exit when v_count > 0 or v_job.next_entry_id = 0
                   or v_job.paid_winners + v_job.failed_winners + v_job.cancelled_winners >= v_job.total_winners;
            v_job.next_entry_id := 0;
        end loop;
    end if;
    if v_count > 0 then
        perform nextval('pgwallet.payout_batches_seq');  -- counted with the operation below (payout_clocks)
        select coalesce(array_agg(i.id) filter (where r.refusal is not null), '{}'),
               coalesce(array_agg(r.refusal) filter (where r.refusal is not null), '{}'),
               coalesce(sum(i.amount) filter (where r.refusal is null), 0)
        into v_failed_ids, v_errors, v_amount
        from pgwallet.pay_hold_parts(v_job.hold_id, nextval('pgwallet.operation_id_seq'), 'payout', v_accounts,
                                     v_amounts, false, jsonb_build_object('payout_job_id', p_job_id), v_transfers)
             with ordinality r(account_id, transfer_id, refusal, ord)
        join unnest(v_ids, v_amounts) with ordinality i(id, amount, ord) on i.ord = r.ord;
        v_failed := cardinality(v_failed_ids);
        v_paid := v_count - v_failed;
        if v_failed > 0 then
            update pgwallet.payout_entries e
            set status = 'failed', error = f.error, transfer_id = null
            from unnest(v_failed_ids, v_errors) f(id, error)
            where e.id = f.id;
        end if;
        update pgwallet.payout_jobs j
        set status = 'running', started_at = coalesce(j.started_at, now()),
            next_entry_id = greatest(j.next_entry_id, v_ids[v_count]),
            paid_winners = j.paid_winners + v_paid,
            failed_winners = j.failed_winners + v_failed, processed_winners = j.processed_winners + v_paid + v_failed,
            paid_amount = j.paid_amount + v_amount
        where j.id = p_job_id
        returning * into v_job;
    end if;
    v_job := pgwallet.finish_payout_job(v_job);
    if v_paid + v_failed > 0 then  -- watchers (the admin page) follow the progress, one notice per batch
        perform pg_catalog.pg_notify('pgwallet_payout_progress', p_job_id::text);
    end if;
    return pgwallet.payout_job_json(v_job) || pgwallet.payout_clocks()
           || jsonb_build_object('processed', v_paid + v_failed, 'paid', v_paid, 'failed', v_failed);
end
$$;

-- next_payout_job: the oldest job with work left that no batch is paying right now, else the oldest
-- job with work left, else null. For workers; a hint only (the batch decides). Locks nothing it keeps.
create or replace function pgwallet.next_payout_job()
returns bigint
language sql
volatile
security definer
set search_path = pgwallet, pg_temp
as $$
    select coalesce(
        (select j.id from pgwallet.payout_jobs j where j.status in ('queued', 'running')
         order by j.id limit 1 for update skip locked),
        (select j.id from pgwallet.payout_jobs j where j.status in ('queued', 'running') order by j.id limit 1))
$$;

-- retry_failed_payout_entries: makes the job's failed entries pending again (their money is still
-- held) and puts the job back to running, for the workers to pay them (e.g. after unfreezing the
-- winners, or the pool). Locks: the job's gate, the job row, then its failed entries.
-- Raises: PAYOUT_JOB_NOT_FOUND, INVALID_STATE_TRANSITION (completed or cancelled jobs).
create or replace function pgwallet.retry_failed_payout_entries(p_job_id bigint)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_job   pgwallet.payout_jobs;
    v_count integer;
begin
    v_job := pgwallet.take_payout_job(p_job_id);
    if v_job.status in ('completed', 'cancelled') then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('payout job %s is %s: nothing to retry', p_job_id, v_job.status), 'job_id');
    end if;
    update pgwallet.payout_entries e set status = 'pending'
    where e.job_id = p_job_id and e.status = 'failed';
    get diagnostics v_count = row_count;
    update pgwallet.payout_jobs j
    set status = case when j.status = 'paused' then 'paused'  -- retried entries wait for resume_payout_job
                      when v_count > 0 or j.status = 'failed' then 'running' else j.status end,
        failed_winners = j.failed_winners - v_count, processed_winners = j.processed_winners - v_count,
        error = null, next_entry_id = 0,
        completed_at = case when v_count > 0 or j.status = 'failed' then null else j.completed_at end
    where j.id = p_job_id
    returning * into v_job;
    v_job := pgwallet.finish_payout_job(v_job);
    if v_job.status = 'running' then
        perform pg_catalog.pg_notify('pgwallet_payouts', v_job.id::text);
    end if;
    return pgwallet.payout_job_json(v_job) || jsonb_build_object('retried', v_count);
end
$$;

-- pause_payout_job: stops the job's batches where they are: it waits for the batches in flight, and no
-- batch pays a paused job (process_payout_batch answers processed 0) until resume_payout_job. Its entries
-- and its hold stay as they are. Pausing a paused job returns it unchanged.
-- Locks: the job's gate, the job row. Raises: PAYOUT_JOB_NOT_FOUND, INVALID_STATE_TRANSITION (a job
-- that has ended).
create or replace function pgwallet.pause_payout_job(p_job_id bigint)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_job pgwallet.payout_jobs;
begin
    v_job := pgwallet.take_payout_job(p_job_id);
    if v_job.status = 'paused' then
        return pgwallet.payout_job_json(v_job);
    end if;
    if v_job.status not in ('queued', 'running') then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('payout job %s is %s: nothing to pause', p_job_id, v_job.status), 'job_id');
    end if;
    update pgwallet.payout_jobs j set status = 'paused', paused_at = now()
    where j.id = p_job_id
    returning * into v_job;
    perform pg_catalog.pg_notify('pgwallet_payout_progress', p_job_id::text);
    return pgwallet.payout_job_json(v_job);
end
$$;

-- resume_payout_job: a paused job goes back to work (running, or queued if no batch had started it) and
-- the workers are woken. Resuming a job that is queued or running returns it unchanged.
-- Locks: the job's gate, the job row. Raises: PAYOUT_JOB_NOT_FOUND, INVALID_STATE_TRANSITION (a job
-- that has ended).
create or replace function pgwallet.resume_payout_job(p_job_id bigint)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_job pgwallet.payout_jobs;
begin
    v_job := pgwallet.take_payout_job(p_job_id);
    if v_job.status in ('queued', 'running') then
        return pgwallet.payout_job_json(v_job);
    end if;
    if v_job.status <> 'paused' then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('payout job %s is %s: only a paused job resumes', p_job_id, v_job.status), 'job_id');
    end if;
    update pgwallet.payout_jobs j
    set status = case when j.started_at is null then 'queued' else 'running' end, paused_at = null
    where j.id = p_job_id
    returning * into v_job;
    perform pg_catalog.pg_notify('pgwallet_payouts', p_job_id::text);
    perform pg_catalog.pg_notify('pgwallet_payout_progress', p_job_id::text);
    return pgwallet.payout_job_json(v_job);
end
$$;

-- cancel_payout_job: stops the job: its pending and failed entries are cancelled and their part of
-- the hold released (the hold is settled: captured for what was paid). Cancelling a cancelled job
-- returns it unchanged. Locks: the job's gate, the job row, its entries, the pool account, the hold.
-- Raises: PAYOUT_JOB_NOT_FOUND, INVALID_STATE_TRANSITION (a completed job).
create or replace function pgwallet.cancel_payout_job(p_job_id bigint)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_job       pgwallet.payout_jobs;
    v_pending   integer;
    v_failed    integer;
begin
    v_job := pgwallet.take_payout_job(p_job_id);
    if v_job.status = 'cancelled' then
        return pgwallet.payout_job_json(v_job) || jsonb_build_object('cancelled', 0);
    end if;
    if v_job.status = 'completed' then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('payout job %s is completed: nothing to cancel', p_job_id), 'job_id');
    end if;
    with c as (
        update pgwallet.payout_entries e set status = 'cancelled', processed_at = now()
        from (select x.id, x.status from pgwallet.payout_entries x
              where x.job_id = p_job_id and x.status in ('pending', 'failed') for update) old
        where e.id = old.id
        returning old.status
    )
    select count(*) filter (where c.status = 'pending'), count(*) filter (where c.status = 'failed')
    into v_pending, v_failed
    from c;
    if v_job.hold_id is not null
       and (select h.status from pgwallet.holds h where h.id = v_job.hold_id) = 'open' then
        perform pgwallet.pay_hold_parts(v_job.hold_id, nextval('pgwallet.operation_id_seq'), 'payout', '{}', '{}',
                                        true);
    end if;
    update pgwallet.payout_jobs j
    set status = 'cancelled', paused_at = null, cancelled_winners = j.cancelled_winners + v_pending + v_failed,
        failed_winners = j.failed_winners - v_failed, processed_winners = j.processed_winners - v_failed,
        completed_at = now()
    where j.id = p_job_id
    returning * into v_job;
    return pgwallet.payout_job_json(v_job) || jsonb_build_object('cancelled', v_pending + v_failed);
end
$$;

-- get_payout_job_status: the job's status, counters and progress. Locks nothing.
-- Raises: PAYOUT_JOB_NOT_FOUND.
create or replace function pgwallet.get_payout_job_status(p_job_id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_job pgwallet.payout_jobs;
begin
    select * into v_job from pgwallet.payout_jobs j where j.id = p_job_id;
    if not found then
        perform pgwallet.raise_error('PAYOUT_JOB_NOT_FOUND', pg_catalog.format('payout job %s', p_job_id), 'job_id');
    end if;
    return pgwallet.payout_job_json(v_job);
end
$$;

-- What each role may call: edge functions create jobs and read their status; staff run the workers,
-- retry and cancel.
-- list_payout_jobs: payout jobs, newest first, p_limit at a time (only those of status p_status when
-- given), each as get_payout_job_status shows it. Locks nothing. Raises: INVALID_REQUEST.
create or replace function pgwallet.list_payout_jobs(p_status text default null, p_limit integer default 50,
                                                     p_before_job_id bigint default null)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_request(p_limit between 1 and 1000, 'limit', 'must be 1 to 1000');
    perform pgwallet.check_request(p_status is null or p_status in ('queued', 'running', 'paused', 'completed',
                                   'completed_with_errors', 'failed', 'cancelled'), 'status',
                                   'must be queued, running, paused, completed, completed_with_errors, failed or cancelled');
    return coalesce((select jsonb_agg(pgwallet.payout_job_json(j) order by j.id desc)
                     from (select * from pgwallet.payout_jobs x
                           where (p_status is null or x.status = p_status)
                             and (p_before_job_id is null or x.id < p_before_job_id)
                           order by x.id desc limit p_limit) j), '[]');
end
$$;

-- list_failed_payout_entries: the failed entries of job p_job_id (winner account, amount, error, attempts,
-- when), p_limit at a time after entry p_after_entry_id: what staff fix before retry_failed_payout_entries.
-- Locks nothing. Raises: INVALID_REQUEST, PAYOUT_JOB_NOT_FOUND.
create or replace function pgwallet.list_failed_payout_entries(p_job_id bigint, p_limit integer default 100,
                                                               p_after_entry_id bigint default 0)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_request(p_limit between 1 and 1000, 'limit', 'must be 1 to 1000');
    if not exists (select 1 from pgwallet.payout_jobs j where j.id = p_job_id) then
        perform pgwallet.raise_error('PAYOUT_JOB_NOT_FOUND', pg_catalog.format('payout job %s', p_job_id), 'job_id');
    end if;
    return coalesce((select jsonb_agg(jsonb_build_object('entry_id', e.id, 'job_id', e.job_id, 'account_id',
                                                         e.account_id, 'amount', e.amount, 'error', e.error,
                                                         'attempts', e.attempts, 'processed_at', e.processed_at)
                                      order by e.id)
                     from (select * from pgwallet.payout_entries x
                           where x.job_id = p_job_id and x.status = 'failed' and x.id > coalesce(p_after_entry_id, 0)
                           order by x.id limit p_limit) e), '[]');
end
$$;

grant execute on function pgwallet.get_payout_job_status(bigint) to pgwallet_app;
grant execute on function
    pgwallet.list_payout_jobs(text, integer, bigint),
    pgwallet.list_failed_payout_entries(bigint, integer, bigint),
    pgwallet.create_payout_job(text, bigint, bigint, integer, jsonb, text, bigint),
    pgwallet.retry_failed_payout_entries(bigint),
    pgwallet.cancel_payout_job(bigint),
    pgwallet.pause_payout_job(bigint),
    pgwallet.resume_payout_job(bigint)
    to pgwallet_staff;
grant execute on function
    pgwallet.process_payout_batch(bigint, integer),
    pgwallet.next_payout_job()
    to pgwallet_worker;
