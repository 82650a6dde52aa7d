-- Drops the investment and job tables, their procedures, settings and error codes.
drop trigger if exists jobs_follow_status on pgwallet.jobs;
do $$
declare
    f regprocedure;
begin
    for f in select p.oid::regprocedure from pg_catalog.pg_proc p
             where p.pronamespace = 'pgwallet'::regnamespace
               and p.proname in ('job_json', 'enqueue_job', 'fetch_jobs', 'lock_leased_job', 'complete_job',
                                 'fail_job', 'defer_job', 'rescue_expired_jobs', 'retry_job', 'cancel_job',
                                 'get_job', 'list_jobs', 'purge_jobs', 'feature_enabled', 'require_feature',
                                 'list_feature_flags', 'set_feature_flag', 'take_rate_limit', 'set_rate_limit',
                                 'list_rate_limits', 'purge_rate_limit_hits', 'product_json', 'investment_json',
                                 'dividend_json', 'create_investment_product', 'get_investment_product',
                                 'create_investment', 'execute_investment', 'get_investment',
                                 'run_investment_execution', 'distribute_dividend', 'run_dividend', 'get_dividend',
                                 'follow_job_status', 'fail_refused_job') loop
        execute pg_catalog.format('drop routine %s', f);
    end loop;
end
$$;
drop table if exists pgwallet.dividends;
drop table if exists pgwallet.investments;
drop table if exists pgwallet.investment_products;
drop table if exists pgwallet.rate_limit_hits;
drop table if exists pgwallet.rate_limits;
drop table if exists pgwallet.feature_flags;
drop table if exists pgwallet.jobs;
delete from pgwallet.settings where name in ('job_backoff_base', 'job_retention_succeeded', 'job_retention_failed',
                                             'job_flag_deferral');
delete from pgwallet.error_catalogue where code in ('FEATURE_DISABLED', 'RATE_LIMITED', 'JOB_NOT_FOUND',
                                                    'PRODUCT_NOT_FOUND', 'INVESTMENT_NOT_FOUND', 'DIVIDEND_NOT_FOUND');
