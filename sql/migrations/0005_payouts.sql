-- Batched payouts: a job per challenge result, one entry per winner, paid in set-based batches.
-- depends: 0002_ledger

set local role pgwallet_owner;

-- One job per resolved challenge, ever (a cancelled job may have paid some winners already). The pool is
-- covered by a hold on the pool account (hold_id) that the batches pay out in parts.
create table pgwallet.payout_jobs (
    id                bigint generated always as identity primary key,
    challenge_id      text not null check (length(challenge_id) between 1 and 200),
    pool_account_id   bigint not null references pgwallet.accounts (id),
    fee_account_id    bigint references pgwallet.accounts (id),
    currency          text not null,
    total_pool        bigint not null check (total_pool > 0),
    platform_fee_bps  integer not null check (platform_fee_bps between 0 and 10000),
    platform_fee      bigint not null check (platform_fee >= 0),
    payout_total      bigint not null check (payout_total >= 0),
    hold_id           bigint,
    status            text not null default 'queued'
                      check (status in ('queued', 'running', 'completed', 'completed_with_errors', 'failed',
                                        'cancelled')),
    total_winners     integer not null check (total_winners >= 0),
    processed_winners integer not null default 0,  -- paid + failed (an entry processed at least once)
    paid_winners      integer not null default 0,
    failed_winners    integer not null default 0,
    cancelled_winners integer not null default 0,
    paid_amount       bigint not null default 0,
    next_entry_id     bigint not null default 0,  -- batches look for pending entries after this id
    error             text,
    created_at        timestamptz not null default now(),
    started_at        timestamptz,
    completed_at      timestamptz,
    -- a draw (no winner, or no share) pays nothing and takes no fee
    check (platform_fee + payout_total = total_pool or (platform_fee = 0 and payout_total = 0)),
    check (processed_winners = paid_winners + failed_winners),
    check (paid_winners + failed_winners + cancelled_winners <= total_winners),
    check ((status in ('completed', 'completed_with_errors', 'failed', 'cancelled')) = (completed_at is not null))
);
create unique index payout_jobs_challenge_idx on pgwallet.payout_jobs (challenge_id);
-- workers look for jobs with work left
create index payout_jobs_active_idx on pgwallet.payout_jobs (id) where status in ('queued', 'running');

-- One row per winner, in the order of the winner list. Each account once per job is checked when the
-- job is created (no unique index: it would cost a third of a 100,000-winner insert).
create table pgwallet.payout_entries (
    id           bigint generated always as identity primary key,
    job_id       bigint not null,  -- no foreign key: one trigger per row on a 100,000-row insert
    account_id   bigint not null,
    amount       bigint not null check (amount >= 0),
    status       text not null default 'pending' check (status in ('pending', 'completed', 'failed', 'cancelled')),
    error        text,
    attempts     integer not null default 0,
    transfer_id  bigint,
    processed_at timestamptz,
    check ((status = 'completed' and amount > 0) = (transfer_id is not null))
) with (fillfactor = 50);
-- No index names status: a batch's update of an entry (pending -> completed) is then a HOT update, in
-- the room fillfactor leaves on each page. Batches find pending entries from the job's cursor on.
create index payout_entries_job_idx on pgwallet.payout_entries (job_id, id);

insert into pgwallet.error_catalogue (code, sqlstate, http_status, message) values
    ('PAYOUT_JOB_NOT_FOUND', 'W0030', 404, 'Payout job not found');

reset role;
