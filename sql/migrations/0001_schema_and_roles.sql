-- The pgwallet schema and its four roles.
--   pgwallet_owner     owns every object; migrations and procedures are created as this role
--   pgwallet_app       may only EXECUTE the public procedures (no table privilege at all)
--   pgwallet_staff     pgwallet_app plus the staff procedures (manual recharges, sweeps)
--   pgwallet_readonly  reads the views
-- Roles are cluster-wide: they are created only when missing, so several databases can share them.
-- depends:

do $$
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'pgwallet_owner') then
        create role pgwallet_owner nologin;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'pgwallet_app') then
        create role pgwallet_app nologin;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'pgwallet_staff') then
        create role pgwallet_staff nologin;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'pgwallet_readonly') then
        create role pgwallet_readonly nologin;
    end if;
    if not pg_catalog.pg_has_role(current_user, 'pgwallet_owner', 'member') then
        execute pg_catalog.format('grant pgwallet_owner to %I', current_user);
    end if;
end
$$;

grant pgwallet_app to pgwallet_staff;

create schema pgwallet authorization pgwallet_owner;

grant usage on schema pgwallet to pgwallet_app, pgwallet_staff, pgwallet_readonly;

-- Functions are executable by PUBLIC by default: not the owner's. Each procedure file grants what it
-- exposes. (A per-schema default can only add privileges, so this one is for the role as a whole.)
alter default privileges for role pgwallet_owner revoke execute on functions from public;
