-- Core helpers every procedure uses: errors from the catalogue, request checks, idempotency keys.
-- Internal: none of these is granted to the application roles.

-- raise_error: raises the catalogued error p_code with its SQLSTATE; p_field names the offending
-- input (reported as the COLUMN field). Locks nothing. Raises: always.
create or replace function pgwallet.raise_error(p_code text, p_detail text default null,
                                                p_field text default null, p_hint text default null)
returns void
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    e pgwallet.error_catalogue;
begin
    select * into e from pgwallet.error_catalogue where code = p_code;
    if not found then
        raise exception 'pgwallet: error code % is not in pgwallet.error_catalogue', p_code
            using errcode = 'XX000';
    end if;
    if p_hint is null then
        raise exception using errcode = e.sqlstate, message = e.message,
            detail = coalesce(p_detail, e.message), column = coalesce(p_field, '');
    end if;
    raise exception using errcode = e.sqlstate, message = e.message,
        detail = coalesce(p_detail, e.message), column = coalesce(p_field, ''), hint = p_hint;
end
$$;

-- check_request: raises INVALID_REQUEST naming p_field unless p_ok is true (null is not true).
-- Locks nothing.
create or replace function pgwallet.check_request(p_ok boolean, p_field text, p_rule text)
returns void
language plpgsql
set search_path = pgwallet, pg_temp
as $$
begin
    if p_ok is not true then
        perform pgwallet.raise_error('INVALID_REQUEST', p_field || ': ' || p_rule, p_field);
    end if;
end
$$;

-- setting: the value of a row of pgwallet.settings. Locks nothing. Raises: nothing (null if missing).
create or replace function pgwallet.setting(p_name text)
returns text
language sql
stable
set search_path = pgwallet, pg_temp
as $$
    select value from pgwallet.settings where name = p_name
$$;

-- claim_idempotency_key: claims (scope, key) for the current transaction and returns null, or returns
-- the response stored by the first request with this key, marked replayed. Locks: the key row; a
-- concurrent duplicate waits for the first transaction to commit, then replays it.
-- Raises: DUPLICATE_REQUEST when the key was used for a different request, INVALID_REQUEST for a bad key.
create or replace function pgwallet.claim_idempotency_key(p_scope text, p_key text, p_request jsonb)
returns jsonb
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_hash text := md5(p_request::text);
    v_ttl  interval := coalesce((select value from pgwallet.settings where name = 'idempotency_ttl'),
                               '24 hours')::interval;
    v_row  pgwallet.idempotency_keys;
begin
    if length(p_key) between 1 and 255 is not true then
        perform pgwallet.raise_error('INVALID_REQUEST', 'idempotency_key: must be 1 to 255 characters',
                                     'idempotency_key');
    end if;
    loop
        insert into pgwallet.idempotency_keys (scope, key, request_hash, status, expires_at)
        values (p_scope, p_key, v_hash, 'pending', now() + v_ttl)
        on conflict (scope, key) do nothing;
        if found then
            return null;
        end if;
        select * into v_row from pgwallet.idempotency_keys
        where scope = p_scope and key = p_key
        for update;
        exit when found;   -- else it was purged in between: claim it again
    end loop;
    if v_row.expires_at <= now() then
        -- expired but not purged yet: the key is free again
        update pgwallet.idempotency_keys
        set request_hash = v_hash, status = 'pending', response = null,
            created_at = now(), expires_at = now() + v_ttl
        where scope = p_scope and key = p_key;
        return null;
    end if;
    if v_row.request_hash <> v_hash then
        perform pgwallet.raise_error('DUPLICATE_REQUEST',
            pg_catalog.format('key %s was first used for a different %s request', p_key, p_scope),
            'idempotency_key', 'use a new key for a new request');
    end if;
    return v_row.response || '{"replayed": true}';
end
$$;

-- complete_idempotency_key: stores the response of the request that claimed (scope, key), in the same
-- transaction as its money movement. Locks: the key row (already ours). Raises: nothing.
create or replace function pgwallet.complete_idempotency_key(p_scope text, p_key text, p_response jsonb)
returns jsonb
language plpgsql
set search_path = pgwallet, pg_temp
as $$
begin
    update pgwallet.idempotency_keys
    set status = 'completed', response = p_response
    where scope = p_scope and key = p_key;
    return p_response;
end
$$;

-- purge_idempotency_keys: deletes up to p_batch_size expired keys and returns how many; call it in a
-- loop until it returns 0 (each call is one short transaction). Locks: the deleted rows, skipping
-- rows another purge holds. Raises: INVALID_REQUEST for a bad batch size.
create or replace function pgwallet.purge_idempotency_keys(p_batch_size integer default 1000)
returns integer
language plpgsql
security definer
set search_path = pgwallet, pg_temp
as $$
declare
    v_count integer;
begin
    perform pgwallet.check_request(p_batch_size between 1 and 100000, 'batch_size', 'must be 1 to 100000');
    delete from pgwallet.idempotency_keys k
    where k.ctid = any (array(
        select x.ctid from pgwallet.idempotency_keys x
        where x.expires_at <= now()
        limit p_batch_size
        for update skip locked));
    get diagnostics v_count = row_count;
    return v_count;
end
$$;
