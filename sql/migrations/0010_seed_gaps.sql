-- What the seeds asked for that the schema lacked: a dividend becomes 'distributed' once its payout job has
-- paid every holder; payout entries keep when they were created; succeeded jobs are kept 24 hours and at
-- most job_retention_succeeded_max of them.
-- depends: 0009_trust_boundary

set local role pgwallet_owner;

alter table pgwallet.dividends drop constraint dividends_status_check;
alter table pgwallet.dividends add constraint dividends_status_check
    check (status in ('queued', 'distributing', 'distributed', 'failed', 'cancelled'));
alter table pgwallet.dividends drop constraint dividends_check;
alter table pgwallet.dividends add constraint dividends_check
    check ((status in ('distributing', 'distributed')) = (payout_job_id is not null));

alter table pgwallet.payout_entries add column created_at timestamptz not null default now();

insert into pgwallet.settings (name, value, description) values
    ('job_retention_succeeded_max', '1000', 'At most this many succeeded jobs are kept, the newest (purge_jobs).');

reset role;
