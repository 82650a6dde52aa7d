-- Drops pausing: paused jobs go back to work (running, or queued when no batch ever started them).
set local role pgwallet_owner;
alter table pgwallet.payout_jobs drop constraint payout_jobs_paused_at;
update pgwallet.payout_jobs set status = case when started_at is null then 'queued' else 'running' end
where status = 'paused';
alter table pgwallet.payout_jobs drop constraint payout_jobs_status_check;
alter table pgwallet.payout_jobs add constraint payout_jobs_status_check
    check (status in ('queued', 'running', 'completed', 'completed_with_errors', 'failed', 'cancelled'));
alter table pgwallet.payout_jobs drop column paused_at;
reset role;
