-- Drops what 0009 added, and the functions its code introduced; restores the queue's guard of 0004. Roll
-- back together with the code of before: `pgwallet migrate` of that code re-installs its procedures.
do $$
declare
    f regprocedure;
begin
    for f in select p.oid::regprocedure from pg_catalog.pg_proc p
             where p.pronamespace = 'pgwallet'::regnamespace
               and p.proname in ('reserved_metadata_keys', 'domain_transfer_kinds', 'check_metadata', 'check_movement',
                                 'require_owner', 'create_account', 'open_system_account', 'transfer_request',
                                 'user_transfer', 'fund_account', 'hold_funds', 'hold_request', 'user_place_hold',
                                 'require_hold_party', 'capture_request', 'user_capture_hold', 'release_hold',
                                 'void_request', 'user_void_hold', 'expire_hold_set', 'cash_out', 'require_staff',
                                 'staff_label', 'start_payout_job', 'add_job', 'domain_job_kinds') loop
        execute pg_catalog.format('drop routine %s', f);
    end loop;
end
$$;
set local role pgwallet_owner;
drop index if exists pgwallet.card_cashouts_card_idx;
alter table pgwallet.card_cashouts add constraint card_cashouts_card_id_key unique (card_id);
alter table pgwallet.holds drop column if exists domain;
create function pgwallet.guard_queue_hold()
returns trigger
language plpgsql
set search_path = pgwallet, pg_temp
as $$
begin
    if coalesce(current_setting('pgwallet.queue_settling', true), '') <> (old.metadata ->> 'queue_item_id') then
        perform pgwallet.raise_error('INVALID_STATE_TRANSITION',
            pg_catalog.format('hold %s is the escrow of queue item %s: only the queue settles it', old.id,
                              old.metadata ->> 'queue_item_id'), 'hold_id', 'finish, abandon or refund the item');
    end if;
    return new;
end
$$;
create trigger holds_queue_guard before update of status on pgwallet.holds
    for each row when (old.metadata ? 'queue_item_id' and new.status is distinct from old.status)
    execute function pgwallet.guard_queue_hold();
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
