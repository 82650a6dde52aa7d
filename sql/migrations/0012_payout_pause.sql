-- Payout jobs may be paused by staff: a paused job keeps its entries and its hold, no batch pays it,
-- and it goes on where it stopped when resumed.
-- depends: 0011_payout_monitoring

set local role pgwallet_owner;

alter table pgwallet.payout_jobs add column paused_at timestamptz;
alter table pgwallet.payout_jobs drop constraint payout_jobs_status_check;
alter table pgwallet.payout_jobs add constraint payout_jobs_status_check
    check (status in ('queued', 'running', 'paused', 'completed', 'completed_with_errors', 'failed', 'cancelled'));
alter table pgwallet.payout_jobs add constraint payout_jobs_paused_at
    check ((status = 'paused') = (paused_at is not null));

reset role;
