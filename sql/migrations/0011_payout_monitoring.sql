-- Payout monitoring: the seed's four queries as views the read-only role may read (active jobs, the
-- success rate over 24 h, failed entries, processing speed).
-- depends: 0010_seed_gaps

set local role pgwallet_owner;

-- Jobs with work left, with their progress.
create view pgwallet.payout_active_jobs as
select j.id as job_id, j.challenge_id, j.status, j.currency, j.total_winners, j.processed_winners,
       j.paid_winners, j.failed_winners, j.paid_amount, j.payout_total,
       round(100.0 * j.processed_winners / nullif(j.total_winners, 0), 1) as progress_percent,
       j.created_at, j.started_at
from pgwallet.payout_jobs j
where j.status in ('queued', 'running');

-- Jobs ended in the last 24 hours: how many, and the share of their entries paid.
create view pgwallet.payout_success_rate_24h as
select count(*)::integer                                   as jobs_ended,
       count(*) filter (where j.status = 'completed')::integer as jobs_completed,
       coalesce(sum(j.paid_winners), 0)::bigint            as entries_paid,
       coalesce(sum(j.failed_winners), 0)::bigint          as entries_failed,
       round(100.0 * sum(j.paid_winners) / nullif(sum(j.paid_winners + j.failed_winners), 0), 2)
                                                           as success_rate_percent
from pgwallet.payout_jobs j
where j.completed_at > now() - interval '24 hours';

-- Every entry that failed and was not paid since, with its error.
create view pgwallet.payout_failed_entries as
select e.id as entry_id, e.job_id, j.challenge_id, e.account_id, e.amount, j.currency, e.error, e.attempts,
       e.created_at, e.processed_at
from pgwallet.payout_entries e
join pgwallet.payout_jobs j on j.id = e.job_id
where e.status = 'failed';

-- Entries processed per second, per job that has started (up to now for a running one).
create view pgwallet.payout_processing_speed as
select j.id as job_id, j.challenge_id, j.status, j.processed_winners,
       extract(epoch from coalesce(j.completed_at, now()) - j.started_at)::numeric(12, 3) as seconds,
       round(j.processed_winners
             / nullif(extract(epoch from coalesce(j.completed_at, now()) - j.started_at), 0)::numeric, 1)
           as entries_per_second
from pgwallet.payout_jobs j
where j.started_at is not null;

grant select on pgwallet.payout_active_jobs, pgwallet.payout_success_rate_24h, pgwallet.payout_failed_entries,
    pgwallet.payout_processing_speed to pgwallet_readonly;

reset role;
