-- The procedures are re-installed on every migrate; without these tables they cannot run, so they go first.
do $$
declare
    f regprocedure;
begin
    for f in select p.oid::regprocedure from pg_catalog.pg_proc p
             where p.pronamespace = 'pgwallet'::regnamespace loop
        execute pg_catalog.format('drop routine %s', f);
    end loop;
end
$$;
drop view if exists pgwallet.account_balances;
drop table if exists pgwallet.idempotency_keys;
drop table if exists pgwallet.holds;
drop table if exists pgwallet.entries;
drop table if exists pgwallet.transfers;
drop sequence if exists pgwallet.operation_id_seq;
drop table if exists pgwallet.account_slots;
drop table if exists pgwallet.accounts;
drop table if exists pgwallet.error_catalogue;
drop table if exists pgwallet.settings;
drop table if exists pgwallet.currencies;
