-- What the seeds asked for that the schema lacked: a dividend becomes 'distributed' once its payout job has
-- paid every holder; payout entries keep when they were created; succeeded jobs are kept 24 hours and at
-- most job_retention_succeeded_max of them; queue items keep updated_at, and an abandoned item may become
-- refunded (the seed's ABANDONED -> REFUNDED) while keeping when it was abandoned.
-- depends: 0009_trust_boundary

set local role pgwallet_owner;

alter table pgwallet.dividends drop constraint dividends_status_check;
alter table pgwallet.dividends add constraint dividends_status_check
    check (status in ('queued', 'distributing', 'distributed', 'failed', 'cancelled'));
alter table pgwallet.dividends drop constraint dividends_check;
alter table pgwallet.dividends add constraint dividends_check
    check ((status in ('distributing', 'distributed')) = (payout_job_id is not null));

alter table pgwallet.payout_entries add column created_at timestamptz not null default now();

alter table pgwallet.queue_items add column updated_at timestamptz not null default now();
do $$
declare
    v_name text;
begin
    select c.conname into v_name from pg_catalog.pg_constraint c
    where c.conrelid = 'pgwallet.queue_items'::regclass and c.contype = 'c'
      and pg_catalog.pg_get_constraintdef(c.oid) = 'CHECK (((status = ''ABANDONED''::text) = (abandoned_at IS NOT NULL)))';
    execute pg_catalog.format('alter table pgwallet.queue_items drop constraint %I', v_name);
end
$$;
alter table pgwallet.queue_items add constraint queue_items_abandoned_at
    check (status not in ('CREATED', 'STARTED', 'FINISHED') or abandoned_at is null);
alter table pgwallet.queue_items add constraint queue_items_abandoned_has_time
    check (status <> 'ABANDONED' or abandoned_at is not null);

insert into pgwallet.settings (name, value, description) values
    ('job_retention_succeeded_max', '1000', 'At most this many succeeded jobs are kept, the newest (purge_jobs).');

reset role;
