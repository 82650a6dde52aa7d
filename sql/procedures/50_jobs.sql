-- Durable jobs: a generic queue in one table (pgwallet.jobs), after pgmq and procrastinate.
-- A job is enqueued once per (kind, idempotency key); a worker leases due jobs with fetch_jobs
-- (FOR UPDATE SKIP LOCKED: two workers never take the same job), runs them, and finishes each with
-- complete_job or fail_job. Only the lease holder may finish a job. A failed attempt is retried after
-- an exponential backoff (base * 2^(attempts - 1): 2, 4, 8 s by default) until max_attempts, then the
-- job is failed with its last error kept. A worker that dies leaves its lease to expire:
-- rescue_expired_jobs puts the job back in the queue for another worker. Money-moving job bodies are
-- one transaction through idempotent ledger calls, so a job run twice never moves money twice.
-- Statuses: queued -> running -> succeeded | failed | queued (retry); queued | running | failed -> cancelled.
-- Timestamps that must be exact within a long transaction use clock_timestamp().

-- job_json: the public view of a job. Locks nothing.
create or replace function pgwallet.job_json(p_job pgwallet.jobs)
returns jsonb
language sql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
    select jsonb_build_object(
        'job_id', p_job.id, 'kind', p_job.kind, 'payload', p_job.payload,
        'idempotency_key', p_job.idempotency_key, 'status', p_job.status, 'attempts', p_job.attempts,
        'max_attempts', p_job.max_attempts, 'run_after', p_job.run_after, 'last_error', p_job.last_error,
        'result', p_job.result, 'locked_by', p_job.locked_by, 'locked_until', p_job.locked_until,
        'created_at', p_job.created_at, 'updated_at', p_job.updated_at, 'started_at', p_job.started_at,
        'finished_at', p_job.finished_at, 'replayed', false)
$$;

-- enqueue_job: queues a job of p_kind with p_payload once per (kind, idempotency key): the same key with
-- the same payload returns the first job (replayed), with another payload it is refused. Notifies
-- channel pgwallet_jobs with the kind. Locks: the new row (a concurrent duplicate waits on the unique
-- index, then replays). Raises: INVALID_REQUEST, DUPLICATE_REQUEST.
-- The body is add_job (internal: the investment domain queues its own kinds through it); enqueue_job is
-- the staff's door, closed to the domains' kinds (domain_job_kinds).
create or replace function pgwallet.add_job(
    p_kind            text,
    p_payload         jsonb,
    p_idempotency_key text,
    p_max_attempts    integer default 3,
    p_run_after       timestamptz default null)
returns jsonb
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_job pgwallet.jobs;
begin
    p_payload := coalesce(p_payload, '{}');
    p_max_attempts := coalesce(p_max_attempts, 3);
    perform pgwallet.check_request(p_kind ~ '^[a-z][a-z0-9_.:-]{0,62}$', 'kind',
                                   'must be 1 to 63 characters: a-z first, then a-z, 0-9, _ . : -');
    perform pgwallet.check_request(jsonb_typeof(p_payload) = 'object', 'payload', 'must be a JSON object');
    perform pgwallet.check_request(length(p_idempotency_key) between 1 and 255, 'idempotency_key',
                                   'must be 1 to 255 characters');
    perform pgwallet.check_request(p_max_attempts between 1 and 100, 'max_attempts', 'must be 1 to 100');
    perform pgwallet.check_request(p_run_after is null or isfinite(p_run_after),
                                   'run_after', 'must be a finite time');
    insert into pgwallet.jobs (kind, payload, idempotency_key, max_attempts, run_after)
    values (p_kind, p_payload, p_idempotency_key, p_max_attempts, coalesce(p_run_after, now()))
    on conflict (kind, idempotency_key) do nothing
    returning * into v_job;
    if found then
        perform pg_catalog.pg_notify('pgwallet_jobs', p_kind);
        return pgwallet.job_json(v_job);
    end if;
    select * into v_job from pgwallet.jobs j where j.kind = p_kind and j.idempotency_key = p_idempotency_key;
    if v_job.payload <> p_payload then
        perform pgwallet.raise_error('DUPLICATE_REQUEST',
            pg_catalog.format('key %s was first used for job %s with another payload', p_idempotency_key, v_job.id),
            'idempotency_key', 'use a new key for a new job');
    end if;
    return pgwallet.job_json(v_job) || '{"replayed": true}';
end
$$;

-- domain_job_kinds: the job kinds whose bodies move money for a domain row; only that domain queues
-- them. Locks nothing.
create or replace function pgwallet.domain_job_kinds()
returns text[]
language sql
immutable
set search_path = pgwallet, pg_temp
as $$
    select array['investment_execution', 'dividend']
$$;

-- enqueue_job: add_job for a kind that is not a domain's own (domain_job_kinds). Staff. Locks: see add_job.
-- Raises: INVALID_REQUEST, DUPLICATE_REQUEST.
create or replace function pgwallet.enqueue_job(
    p_kind            text,
    p_payload         jsonb,
    p_idempotency_key text,
    p_max_attempts    integer default 3,
    p_run_after       timestamptz default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    perform pgwallet.check_request(p_kind <> all (pgwallet.domain_job_kinds()), 'kind',
                                   'is the kind of a domain''s own jobs: that domain queues them');
    return pgwallet.add_job(p_kind, p_payload, p_idempotency_key, p_max_attempts, p_run_after);
end
$$;

-- fetch_jobs: leases up to p_limit due jobs (queued, run_after passed, oldest first) of p_kinds (all
-- kinds when null) to worker p_worker for p_lease_seconds: each becomes running, its attempts + 1.
-- Returns them as a JSON array. Locks: the jobs taken, FOR UPDATE SKIP LOCKED (jobs another worker is
-- taking are passed over, never waited for). Raises: INVALID_REQUEST.
create or replace function pgwallet.fetch_jobs(
    p_worker        text,
    p_kinds         text[] default null,
    p_limit         integer default 10,
    p_lease_seconds integer default 30)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_now  timestamptz := clock_timestamp();
    v_jobs jsonb;
begin
    p_limit := coalesce(p_limit, 10);
    p_lease_seconds := coalesce(p_lease_seconds, 30);
    perform pgwallet.check_request(length(p_worker) between 1 and 200, 'worker', 'must be 1 to 200 characters');
    perform pgwallet.check_request(p_kinds is null or (cardinality(p_kinds) between 1 and 100
                                   and array_position(p_kinds, null) is null), 'kinds',
                                   'must be 1 to 100 kinds, or null for every kind');
    perform pgwallet.check_request(p_limit between 1 and 1000, 'limit', 'must be 1 to 1000');
    perform pgwallet.check_request(p_lease_seconds between 1 and 86400, 'lease_seconds', 'must be 1 to 86400');
    with due as (
        select j.id from pgwallet.jobs j
        where j.status = 'queued' and j.run_after <= v_now and (p_kinds is null or j.kind = any (p_kinds))
        order by j.run_after, j.id
        limit p_limit
        for update skip locked
    ), taken as (
        update pgwallet.jobs j
        set status = 'running', attempts = j.attempts + 1, locked_by = p_worker,
            locked_until = v_now + make_interval(secs => p_lease_seconds), started_at = v_now, updated_at = v_now
        from due
        where j.id = due.id
        returning j.*
    )
    select coalesce(jsonb_agg(pgwallet.job_json(t) order by t.run_after, t.id), '[]') into v_jobs from taken t;
    return v_jobs;
end
$$;

-- lock_leased_job: job p_job_id, locked, checked to be running under p_worker's lease (an expired lease
-- that nobody took over still counts: the job is still this worker's). Internal. Locks: the job row.
-- Raises: INVALID_REQUEST, JOB_NOT_FOUND, INVALID_STATE_TRANSITION (the lease was lost: another worker
-- owns the job, or it was cancelled).
create or replace function pgwallet.lock_leased_job(p_job_id bigint, p_worker text)
returns pgwallet.jobs
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_job pgwallet.jobs;
begin
    perform pgwallet.check_request(length(p_worker) between 1 and 200, 'worker', 'must be 1 to 200 characters');
    select * into v_job from pgwallet.jobs j where j.id = p_job_id for update;
    if not found then
        perform pgwallet.raise_error('JOB_NOT_FOUND', pg_catalog.format('job %s', p_job_id), 'job_id');
    end if;
    if v_job.status <> 'running' or v_job.locked_by <> p_worker then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('job %s is %s%s: worker %s does not hold its lease', p_job_id, v_job.status,
                              case when v_job.status = 'running' then ' under ' || v_job.locked_by else '' end,
                              p_worker),
            'job_id', 'the lease was lost: another worker owns the job');
    end if;
    return v_job;
end
$$;

-- complete_job: the lease holder p_worker marks running job p_job_id succeeded with p_result. Locks: the
-- job row. Raises: INVALID_REQUEST, JOB_NOT_FOUND, INVALID_STATE_TRANSITION (lease lost).
create or replace function pgwallet.complete_job(p_job_id bigint, p_worker text, p_result jsonb default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_job pgwallet.jobs;
begin
    v_job := pgwallet.lock_leased_job(p_job_id, p_worker);
    update pgwallet.jobs j
    set status = 'succeeded', result = p_result, locked_by = null, locked_until = null,
        finished_at = clock_timestamp(), updated_at = clock_timestamp()
    where j.id = p_job_id
    returning * into v_job;
    return pgwallet.job_json(v_job);
end
$$;

-- fail_job: the lease holder p_worker reports a failed attempt of job p_job_id with p_error. With
-- attempts left the job is queued again after base * 2^(attempts - 1) (setting job_backoff_base,
-- 2 s: then 2, 4, 8 s); without, or with p_final (a refusal that retrying cannot change), it is failed.
-- last_error keeps p_error either way. Locks: the job row. Raises: INVALID_REQUEST, JOB_NOT_FOUND,
-- INVALID_STATE_TRANSITION (lease lost).
create or replace function pgwallet.fail_job(p_job_id bigint, p_worker text, p_error text,
                                             p_final boolean default false)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_job  pgwallet.jobs;
    v_now  timestamptz := clock_timestamp();
    v_base interval := coalesce(pgwallet.setting('job_backoff_base'), '2 seconds')::interval;
begin
    perform pgwallet.check_request(length(p_error) between 1 and 10000, 'error', 'must be 1 to 10000 characters');
    v_job := pgwallet.lock_leased_job(p_job_id, p_worker);
    if v_job.attempts < v_job.max_attempts and not coalesce(p_final, false) then
        update pgwallet.jobs j
        set status = 'queued', last_error = p_error, locked_by = null, locked_until = null, updated_at = v_now,
            run_after = v_now + v_base * power(2, j.attempts - 1)
        where j.id = p_job_id
        returning * into v_job;
    else
        update pgwallet.jobs j
        set status = 'failed', last_error = p_error, locked_by = null, locked_until = null, updated_at = v_now,
            finished_at = v_now
        where j.id = p_job_id
        returning * into v_job;
    end if;
    return pgwallet.job_json(v_job);
end
$$;

-- defer_job: the lease holder p_worker puts job p_job_id back in the queue for p_delay without using an
-- attempt (a kill switch is off: the job is not failing). Locks: the job row. Raises: as fail_job.
create or replace function pgwallet.defer_job(p_job_id bigint, p_worker text, p_reason text,
                                              p_delay interval default null)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_job pgwallet.jobs;
    v_now timestamptz := clock_timestamp();
begin
    v_job := pgwallet.lock_leased_job(p_job_id, p_worker);
    update pgwallet.jobs j
    set status = 'queued', attempts = j.attempts - 1, last_error = p_reason, locked_by = null, locked_until = null,
        updated_at = v_now,
        run_after = v_now + coalesce(p_delay, pgwallet.setting('job_flag_deferral')::interval, '5 seconds')
    where j.id = p_job_id
    returning * into v_job;
    return pgwallet.job_json(v_job) || '{"deferred": true}';
end
$$;

-- rescue_expired_jobs: running jobs whose lease has expired (their worker died or hangs) go back to the
-- queue at once, or to failed ("lease expired") when their attempts are used up; up to p_limit jobs.
-- Returns how many were rescued. Workers call it on each poll. Locks: those jobs, SKIP LOCKED (a job
-- whose body is running right now holds its row: it is not rescued under its worker).
-- Raises: INVALID_REQUEST.
create or replace function pgwallet.rescue_expired_jobs(p_limit integer default 100)
returns integer
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_now   timestamptz := clock_timestamp();
    v_count integer;
begin
    p_limit := coalesce(p_limit, 100);
    perform pgwallet.check_request(p_limit between 1 and 10000, 'limit', 'must be 1 to 10000');
    with expired as (
        select j.id from pgwallet.jobs j
        where j.status = 'running' and j.locked_until < v_now
        order by j.locked_until
        limit p_limit
        for update skip locked
    )
    update pgwallet.jobs j
    set status = case when j.attempts < j.max_attempts then 'queued' else 'failed' end,
        last_error = pg_catalog.format('lease expired (worker %s)', j.locked_by),
        run_after = v_now, locked_by = null, locked_until = null, updated_at = v_now,
        finished_at = case when j.attempts < j.max_attempts then null else v_now end
    from expired
    where j.id = expired.id;
    get diagnostics v_count = row_count;
    return v_count;
end
$$;

-- retry_job: a failed or cancelled job is queued again with a fresh set of attempts (a queued one runs
-- now); its last error is kept until the next attempt. Locks: the job row (waits for a body running it).
-- Raises: JOB_NOT_FOUND, INVALID_STATE_TRANSITION (running or succeeded).
create or replace function pgwallet.retry_job(p_job_id bigint)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_job pgwallet.jobs;
    v_now timestamptz := clock_timestamp();
begin
    select * into v_job from pgwallet.jobs j where j.id = p_job_id for update;
    if not found then
        perform pgwallet.raise_error('JOB_NOT_FOUND', pg_catalog.format('job %s', p_job_id), 'job_id');
    end if;
    if v_job.status in ('running', 'succeeded') then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('job %s is %s: nothing to retry', p_job_id, v_job.status), 'job_id');
    end if;
    update pgwallet.jobs j
    set status = 'queued', attempts = case when j.status = 'queued' then j.attempts else 0 end, run_after = v_now,
        finished_at = null, updated_at = v_now
    where j.id = p_job_id
    returning * into v_job;
    perform pg_catalog.pg_notify('pgwallet_jobs', v_job.kind);
    return pgwallet.job_json(v_job);
end
$$;

-- cancel_job: a queued, running or failed job is cancelled; a cancelled one is returned unchanged. A
-- worker running it can no longer finish it (its complete or fail is refused, and a job body rolls
-- back). Locks: the job row (waits for a body running it, which then wins). Raises: JOB_NOT_FOUND,
-- INVALID_STATE_TRANSITION (succeeded).
create or replace function pgwallet.cancel_job(p_job_id bigint)
returns jsonb
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_job pgwallet.jobs;
    v_now timestamptz := clock_timestamp();
begin
    select * into v_job from pgwallet.jobs j where j.id = p_job_id for update;
    if not found then
        perform pgwallet.raise_error('JOB_NOT_FOUND', pg_catalog.format('job %s', p_job_id), 'job_id');
    end if;
    if v_job.status = 'cancelled' then
        return pgwallet.job_json(v_job);
    end if;
    if v_job.status = 'succeeded' then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('job %s has succeeded: nothing to cancel', p_job_id), 'job_id');
    end if;
    update pgwallet.jobs j
    set status = 'cancelled', locked_by = null, locked_until = null, finished_at = v_now, updated_at = v_now
    where j.id = p_job_id
    returning * into v_job;
    return pgwallet.job_json(v_job);
end
$$;

-- get_job: one job. Locks nothing. Raises: JOB_NOT_FOUND.
create or replace function pgwallet.get_job(p_job_id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_job pgwallet.jobs;
begin
    select * into v_job from pgwallet.jobs j where j.id = p_job_id;
    if not found then
        perform pgwallet.raise_error('JOB_NOT_FOUND', pg_catalog.format('job %s', p_job_id), 'job_id');
    end if;
    return pgwallet.job_json(v_job);
end
$$;

-- list_jobs: jobs newest first, optionally of one status and one kind, p_limit at a time (pass the last
-- job_id as p_before_id for the next page), as a JSON array. Locks nothing. Raises: INVALID_REQUEST.
create or replace function pgwallet.list_jobs(p_status text default null, p_kind text default null,
                                              p_limit integer default 50, p_before_id bigint default null)
returns jsonb
language plpgsql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
begin
    p_limit := coalesce(p_limit, 50);
    perform pgwallet.check_request(p_status is null or p_status in ('queued', 'running', 'succeeded', 'failed',
                                                                    'cancelled'),
                                   'status', 'must be queued, running, succeeded, failed or cancelled');
    perform pgwallet.check_request(p_kind is null or length(p_kind) between 1 and 63, 'kind',
                                   'must be 1 to 63 characters');
    perform pgwallet.check_request(p_limit between 1 and 1000, 'limit', 'must be 1 to 1000');
    return (select coalesce(jsonb_agg(pgwallet.job_json(j) order by j.id desc), '[]')
            from (select * from pgwallet.jobs x
                  where (p_status is null or x.status = p_status) and (p_kind is null or x.kind = p_kind)
                    and (p_before_id is null or x.id < p_before_id)
                  order by x.id desc
                  limit p_limit) j);
end
$$;

-- purge_jobs: deletes up to p_batch_size finished jobs past their retention (succeeded: setting
-- job_retention_succeeded, 24 h, and at most job_retention_succeeded_max of them, 1000; failed and
-- cancelled: job_retention_failed, 7 days) and returns how
-- many; call it in a loop until it returns 0 (each call is one short transaction). Locks: the deleted
-- rows, skipping rows another purge holds. Raises: INVALID_REQUEST.
create or replace function pgwallet.purge_jobs(p_batch_size integer default 1000)
returns integer
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_count     integer;
    v_succeeded timestamptz := now() - coalesce(pgwallet.setting('job_retention_succeeded'), '24 hours')::interval;
    v_failed    timestamptz := now() - coalesce(pgwallet.setting('job_retention_failed'), '7 days')::interval;
    v_keep      integer := coalesce(pgwallet.setting('job_retention_succeeded_max'), '1000')::integer;
begin
    p_batch_size := coalesce(p_batch_size, 1000);
    perform pgwallet.check_request(p_batch_size between 1 and 100000, 'batch_size', 'must be 1 to 100000');
    delete from pgwallet.jobs j
    where j.id = any (array(
        select x.id from pgwallet.jobs x
        where x.id in (
            select a.id from pgwallet.jobs a
            where a.status in ('succeeded', 'failed', 'cancelled')
              and a.finished_at < greatest(v_succeeded, v_failed)
              and a.finished_at < case a.status when 'succeeded' then v_succeeded else v_failed end
            union all  -- and the succeeded ones past the newest job_retention_succeeded_max, however young
            (select b.id from pgwallet.jobs b where b.status = 'succeeded'
             order by b.finished_at desc, b.id desc offset v_keep))
        limit p_batch_size
        for update skip locked));
    get diagnostics v_count = row_count;
    return v_count;
end
$$;

-- Every job call is for staff: workers (fetch, complete, fail, defer, rescue), operators (retry,
-- cancel, list, purge, enqueue). Edge functions read one job's status.
grant execute on function pgwallet.get_job(bigint) to pgwallet_app;
grant execute on function
    pgwallet.enqueue_job(text, jsonb, text, integer, timestamptz),
    pgwallet.retry_job(bigint),
    pgwallet.cancel_job(bigint),
    pgwallet.list_jobs(text, text, integer, bigint),
    pgwallet.purge_jobs(integer)
    to pgwallet_staff;
grant execute on function
    pgwallet.fetch_jobs(text, text[], integer, integer),
    pgwallet.complete_job(bigint, text, jsonb),
    pgwallet.fail_job(bigint, text, text, boolean),
    pgwallet.defer_job(bigint, text, text, interval),
    pgwallet.rescue_expired_jobs(integer)
    to pgwallet_worker;
