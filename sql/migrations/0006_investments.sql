-- Investments: a durable job queue, feature flags, rate limits, investment products, investments and
-- dividends. The job queue (pgwallet.jobs) is generic; investments are its first users.
-- depends: 0005_payouts

set local role pgwallet_owner;

-- Durable jobs: one row per unit of work, leased by a worker while it runs. Unique per (kind, key):
-- enqueueing twice with one key returns the first job.
create table pgwallet.jobs (
    id              bigint generated always as identity primary key,
    kind            text not null check (kind ~ '^[a-z][a-z0-9_.:-]{0,62}$'),
    payload         jsonb not null default '{}' check (jsonb_typeof(payload) = 'object'),
    idempotency_key text not null check (length(idempotency_key) between 1 and 255),
    status          text not null default 'queued'
                    check (status in ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts        integer not null default 0 check (attempts >= 0),
    max_attempts    integer not null default 3 check (max_attempts between 1 and 100),
    run_after       timestamptz not null default now(),
    last_error      text,
    result          jsonb,
    locked_by       text,
    locked_until    timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    started_at      timestamptz,  -- the latest attempt's start
    finished_at     timestamptz,
    check ((status = 'running') = (locked_by is not null and locked_until is not null)),
    check ((status in ('succeeded', 'failed', 'cancelled')) = (finished_at is not null))
);
create unique index jobs_kind_key_idx on pgwallet.jobs (kind, idempotency_key);
-- workers look for due jobs, oldest first
create index jobs_due_idx on pgwallet.jobs (run_after, id) where status = 'queued';
-- the rescue looks for expired leases
create index jobs_lease_idx on pgwallet.jobs (locked_until) where status = 'running';
-- the purge looks for finished jobs past their retention
create index jobs_finished_idx on pgwallet.jobs (finished_at) where status in ('succeeded', 'failed', 'cancelled');

-- Feature flags: kill switches read by every procedure they guard, on every call (no cache).
create table pgwallet.feature_flags (
    name        text primary key check (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    enabled     boolean not null,
    description text not null,
    updated_by  text,
    updated_at  timestamptz not null default now()
);
insert into pgwallet.feature_flags (name, enabled, description) values
    ('investment_module_enabled', true, 'Every investment call (products, investments, executions, dividends).'),
    ('investment_execution_enabled', true, 'execute_investment and the execution jobs.'),
    ('dividend_distribution_enabled', true, 'distribute_dividend and the dividend jobs.');

-- Rate limits: at most max_calls calls of an action per subject in any sliding window of window_seconds.
create table pgwallet.rate_limits (
    action         text primary key check (action ~ '^[a-z][a-z0-9_]{0,62}$'),
    max_calls      integer not null check (max_calls between 1 and 1000000),
    window_seconds integer not null check (window_seconds between 1 and 31536000),
    description    text not null
);
insert into pgwallet.rate_limits (action, max_calls, window_seconds, description) values
    ('create_investment_product', 10, 3600, 'Products created per actor.'),
    ('create_investment', 5, 3600, 'Investments created per investor wallet.'),
    ('execute_investment', 10, 3600, 'Executions requested per investor wallet.'),
    ('distribute_dividend', 5, 3600, 'Dividends distributed per actor.');

-- One row per accepted call, written in the call's own transaction (a refused call leaves none).
create table pgwallet.rate_limit_hits (
    id         bigint generated always as identity primary key,
    action     text not null,
    subject    text not null,
    created_at timestamptz not null default clock_timestamp()
);
create index rate_limit_hits_subject_idx on pgwallet.rate_limit_hits (action, subject, created_at);
create index rate_limit_hits_created_idx on pgwallet.rate_limit_hits using brin (created_at);

-- An investment product: the invested money goes to its account (a collector: investors never wait
-- for each other); dividends are paid from its dividend account, which the operator funds.
create table pgwallet.investment_products (
    id                  bigint generated always as identity primary key,
    name                text not null check (length(name) between 1 and 200),
    currency            text not null references pgwallet.currencies (code),
    account_id          bigint not null references pgwallet.accounts (id),
    dividend_account_id bigint not null references pgwallet.accounts (id),
    created_by          text not null,
    created_at          timestamptz not null default now()
);
create unique index investment_products_name_idx on pgwallet.investment_products (name);

-- An investment: created pending, queued by execute_investment, executed (or failed) by its job.
create table pgwallet.investments (
    id                bigint generated always as identity primary key,
    product_id        bigint not null references pgwallet.investment_products (id),
    wallet_account_id bigint not null references pgwallet.accounts (id),
    amount            bigint not null check (amount > 0),
    status            text not null default 'pending'
                      check (status in ('pending', 'queued', 'executed', 'failed', 'cancelled')),
    job_id            bigint,  -- no foreign key: finished jobs are purged
    transfer_id       bigint,
    error             text,
    created_at        timestamptz not null default now(),
    queued_at         timestamptz,
    executed_at       timestamptz,
    check ((status = 'executed') = (transfer_id is not null and executed_at is not null)),
    check ((status = 'pending') = (job_id is null))
);
create index investments_product_idx on pgwallet.investments (product_id) where status = 'executed';
create index investments_wallet_idx on pgwallet.investments (wallet_account_id);

-- A dividend: queued as a job; the job creates the payout job that pays the holders.
create table pgwallet.dividends (
    id            bigint generated always as identity primary key,
    product_id    bigint not null references pgwallet.investment_products (id),
    amount        bigint not null check (amount > 0),
    status        text not null default 'queued'
                  check (status in ('queued', 'distributing', 'failed', 'cancelled')),
    job_id        bigint,  -- set in the same transaction; no foreign key: finished jobs are purged
    payout_job_id bigint references pgwallet.payout_jobs (id),
    holders       integer,
    error         text,
    created_by    text not null,
    created_at    timestamptz not null default now(),
    check ((status = 'distributing') = (payout_job_id is not null))
);
create index dividends_product_idx on pgwallet.dividends (product_id);

insert into pgwallet.settings (name, value, description) values
    ('job_backoff_base', '2 seconds', 'A failed job waits base * 2^(attempts - 1) before its next attempt.'),
    ('job_retention_succeeded', '24 hours', 'How long purge_jobs keeps succeeded jobs.'),
    ('job_retention_failed', '7 days', 'How long purge_jobs keeps failed and cancelled jobs.'),
    ('job_flag_deferral', '5 seconds', 'How long a job waits when the feature flag of its kind is off.');

insert into pgwallet.error_catalogue (code, sqlstate, http_status, message) values
    ('FEATURE_DISABLED', 'W0040', 403, 'This feature is disabled'),
    ('RATE_LIMITED', 'W0041', 429, 'Too many requests'),
    ('JOB_NOT_FOUND', 'W0042', 404, 'Job not found'),
    ('PRODUCT_NOT_FOUND', 'W0043', 404, 'Investment product not found'),
    ('INVESTMENT_NOT_FOUND', 'W0044', 404, 'Investment not found'),
    ('DIVIDEND_NOT_FOUND', 'W0045', 404, 'Dividend not found');

grant select on pgwallet.feature_flags, pgwallet.rate_limits to pgwallet_readonly;

reset role;
