-- Drops what 0009 added. Roll back together with the code of before: `pgwallet migrate` of that code
-- re-installs its procedures (and the queue guard of 0004 with them is not restored: re-apply 0004's).
set local role pgwallet_owner;
drop index if exists pgwallet.card_cashouts_card_idx;
alter table pgwallet.card_cashouts add constraint card_cashouts_card_id_key unique (card_id);
alter table pgwallet.holds drop column if exists domain;
alter table pgwallet.accounts drop column if exists owner;
delete from pgwallet.settings where name in ('movement_max', 'cashless_stripe_recharge_max');
delete from pgwallet.error_catalogue where code = 'FORBIDDEN';
reset role;

do $$
declare
    r text;
begin
    foreach r in array array['pgwallet_admin', 'pgwallet_worker', 'pgwallet_webhook'] loop
        begin
            execute pg_catalog.format('drop owned by %I', r);
            execute pg_catalog.format('drop role if exists %I', r);
        exception when dependent_objects_still_exist or object_in_use then
            raise notice 'role % is still used elsewhere in this cluster: kept', r;
        end;
    end loop;
end
$$;
