-- Drops the payout tables, their procedures and their error codes.
do $$
declare
    f regprocedure;
begin
    for f in select p.oid::regprocedure from pg_catalog.pg_proc p
             where p.pronamespace = 'pgwallet'::regnamespace
               and p.proname in ('create_payout_job', 'process_payout_batch', 'retry_failed_payout_entries',
                                 'cancel_payout_job', 'get_payout_job_status', 'next_payout_job',
                                 'payout_job_json', 'split_payout', 'finish_payout_job', 'check_winners') loop
        execute pg_catalog.format('drop routine %s', f);
    end loop;
end
$$;
drop table if exists pgwallet.payout_entries;
drop table if exists pgwallet.payout_jobs;
delete from pgwallet.error_catalogue where code in ('PAYOUT_JOB_NOT_FOUND');
