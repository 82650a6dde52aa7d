-- Drops what 0010 added ('distributed' dividends go back to 'distributing').
set local role pgwallet_owner;
drop trigger if exists payout_jobs_dividend_distributed on pgwallet.payout_jobs;
update pgwallet.dividends set status = 'distributing' where status = 'distributed';
alter table pgwallet.dividends drop constraint dividends_status_check;
alter table pgwallet.dividends add constraint dividends_status_check
    check (status in ('queued', 'distributing', 'failed', 'cancelled'));
alter table pgwallet.dividends drop constraint dividends_check;
alter table pgwallet.dividends add constraint dividends_check check ((status = 'distributing') = (payout_job_id is not null));
alter table pgwallet.payout_entries drop column if exists created_at;
alter table pgwallet.queue_items drop constraint if exists queue_items_abandoned_has_time;
alter table pgwallet.queue_items drop constraint if exists queue_items_abandoned_at;
update pgwallet.queue_items set abandoned_at = null where status = 'REFUNDED';
alter table pgwallet.queue_items add check ((status = 'ABANDONED') = (abandoned_at is not null));
alter table pgwallet.queue_items drop column if exists updated_at;
delete from pgwallet.settings where name = 'job_retention_succeeded_max';
reset role;
