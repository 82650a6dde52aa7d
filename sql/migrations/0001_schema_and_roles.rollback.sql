-- Drops the schema. Roles are dropped only when no other database still uses them.
drop schema if exists pgwallet cascade;

do $$
declare
    r text;
begin
    foreach r in array array['pgwallet_readonly', 'pgwallet_staff', 'pgwallet_app', 'pgwallet_owner'] loop
        begin
            execute pg_catalog.format('drop owned by %I', r);
            execute pg_catalog.format('drop role if exists %I', r);
        exception when dependent_objects_still_exist or object_in_use then
            raise notice 'role % is still used elsewhere in this cluster: kept', r;
        end;
    end loop;
end
$$;
