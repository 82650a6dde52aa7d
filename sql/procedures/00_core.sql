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

-- money: p_amount minor units as a person reads them, in the currency's decimals with its code ('50.00 EUR',
-- '-3 TOKEN'); for the messages of errors, so that a person reads the unit they typed. Locks nothing.
create or replace function pgwallet.money(p_amount numeric, p_currency text)
returns text
language sql
stable
set search_path = pgwallet, pg_temp
as $$
    select pg_catalog.to_char(p_amount / 10::numeric ^ c.exponent, 'FM999999999999999999990'
                              || case when c.exponent > 0 then '.' || repeat('0', c.exponent) else '' end)
           || ' ' || c.code
    from pgwallet.currencies c where c.code = p_currency
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

-- claim_idempotency_key: returns null when (scope, key) is free for the current transaction, or the
-- response stored by the first request with this key, marked replayed. Locks: a transaction advisory
-- lock on the key, so a concurrent duplicate waits for the first transaction to commit, then replays
-- it. Raises: DUPLICATE_REQUEST when the key was used for a different request, INVALID_REQUEST for a
-- bad key.
create or replace function pgwallet.claim_idempotency_key(p_scope text, p_key text, p_request jsonb)
returns jsonb
language plpgsql
set search_path = pgwallet, pg_temp
as $$
declare
    v_row pgwallet.idempotency_keys;
begin
    if length(p_key) between 1 and 255 is not true then
        perform pgwallet.raise_error('INVALID_REQUEST', 'idempotency_key: must be 1 to 255 characters',
                                     'idempotency_key');
    end if;
    -- class 1885828980 is 'pgwt': pgwallet's own advisory lock space
    perform pg_catalog.pg_advisory_xact_lock(1885828980, pg_catalog.hashtext(p_scope || '/' || p_key));
    select * into v_row from pgwallet.idempotency_keys where scope = p_scope and key = p_key;
    if not found then
        return null;
    end if;
    if v_row.expires_at <= now() then
        -- expired but not purged yet: the key is free again
        delete from pgwallet.idempotency_keys where scope = p_scope and key = p_key;
        return null;
    end if;
    if v_row.request_hash <> md5(p_request::text) then
        perform pgwallet.raise_error('DUPLICATE_REQUEST',
            pg_catalog.format('key %s was first used for a different %s request', p_key, p_scope),
            'idempotency_key', 'use a new key for a new request');
    end if;
    return v_row.response || '{"replayed": true}';
end
$$;

-- complete_idempotency_key: stores the key with the request's hash and its response, in the same
-- transaction as the money movement (the unique key is a second line of defence). Locks: the new
-- row. Raises: nothing of its own (a unique violation would mean a caller skipped the claim).
create or replace function pgwallet.complete_idempotency_key(p_scope text, p_key text, p_request jsonb,
                                                             p_response jsonb)
returns jsonb
language plpgsql
set search_path = pgwallet, pg_temp
as $$
begin
    insert into pgwallet.idempotency_keys (scope, key, request_hash, status, response, expires_at)
    values (p_scope, p_key, md5(p_request::text), 'completed', p_response,
            now() + coalesce((select value from pgwallet.settings where name = 'idempotency_ttl'),
                             '24 hours')::interval);
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
