-- The trust boundary: caller tiers beyond app and staff, owned accounts, holds that belong to a domain,
-- the FORBIDDEN error and the bounds of a single movement.
--   pgwallet_webhook  Stripe recharges only (the webhook handler's login)
--   pgwallet_worker   batch and job processing, sweeps (payout and job workers, cron)
--   pgwallet_admin    pgwallet_staff plus what creates money or changes the rules: accounts that may go
--                     negative or of a system / clearing kind, funding, settings, rate limits
-- pgwallet_staff becomes a member of pgwallet_worker (staff run workers); pgwallet_admin of pgwallet_staff.
-- depends: 0008_card_debit_refusal

do $$
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'pgwallet_webhook') then
        create role pgwallet_webhook nologin;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'pgwallet_worker') then
        create role pgwallet_worker nologin;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'pgwallet_admin') then
        create role pgwallet_admin nologin;
    end if;
end
$$;

grant pgwallet_worker to pgwallet_staff;
grant pgwallet_staff to pgwallet_admin;
grant usage on schema pgwallet to pgwallet_webhook, pgwallet_worker, pgwallet_admin;

set local role pgwallet_owner;

insert into pgwallet.error_catalogue (code, sqlstate, http_status, message) values
    ('FORBIDDEN', 'W0046', 403, 'The caller may not do this');

insert into pgwallet.settings (name, value, description) values
    ('movement_max', '100000000000000',
     'Largest amount of one movement through a public ledger call (transfer, operation leg, hold), minor units.'),
    ('cashless_stripe_recharge_max', '50000',
     'Largest Stripe recharge, minor units (50000 = 500.00 EUR); the card balance cap applies too.');

-- Who an account belongs to: the end user's id in the calling application (a user, a performer, a card
-- holder). Set when the account is opened, never changed; calls made for an end user debit only that
-- user's accounts.
alter table pgwallet.accounts add column owner text check (length(owner) between 1 and 200);
create index accounts_owner_idx on pgwallet.accounts (owner) where owner is not null;

-- A hold placed by a domain for its own object (the queue's escrow): only that domain settles it. Written
-- by the internal placement alone, so no caller can claim or forge it (the trigger of 0004 read a session
-- setting and a metadata key, both of which any caller can set).
alter table pgwallet.holds add column domain text check (domain in ('queue'));
update pgwallet.holds h set domain = 'queue' from pgwallet.queue_items i where i.hold_id = h.id;
drop trigger if exists holds_queue_guard on pgwallet.holds;
drop function if exists pgwallet.guard_queue_hold();

-- A card may be cashed out more than once: money that reaches it after its close-out (a refund, a released
-- hold) is paid out by the next close-out run.
alter table pgwallet.card_cashouts drop constraint card_cashouts_card_id_key;
create index card_cashouts_card_idx on pgwallet.card_cashouts (card_id);

reset role;
