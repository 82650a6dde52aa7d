-- Cashless festival: NFC cards, bars and their orders, recharges (Stripe and checkpoints), staff, cash
-- drawers, the NFC scan log and the close-out. Money itself stays in the ledger core's accounts.
-- depends: 0002_ledger

set local role pgwallet_owner;

insert into pgwallet.error_catalogue (code, sqlstate, http_status, message) values
    ('CARD_NOT_FOUND',       'W0012', 404, 'Card not found'),
    ('CARD_BLOCKED',         'W0013', 409, 'Card is blocked'),
    ('LIMIT_EXCEEDED',       'W0014', 422, 'A recharge limit is exceeded'),
    ('ORDER_NOT_FOUND',      'W0015', 404, 'Order not found'),
    ('STAFF_NOT_AUTHORIZED', 'W0016', 403, 'Staff member is unknown or not active'),
    ('CHECKPOINT_NOT_FOUND', 'W0017', 404, 'Checkpoint not found'),
    ('BAR_NOT_FOUND',        'W0018', 404, 'Point of sale not found'),
    ('CARD_UID_TAKEN',       'W0019', 409, 'A card with this NFC uid exists');

-- Business limits of checkpoint recharges, in minor units of the card's currency.
insert into pgwallet.settings (name, value, description) values
    ('cashless_recharge_min', '100', 'Smallest checkpoint recharge, minor units (100 = 1.00 EUR).'),
    ('cashless_recharge_max', '50000', 'Largest checkpoint recharge, minor units (50000 = 500.00 EUR).'),
    ('cashless_card_balance_max', '100000', 'Largest card balance a checkpoint recharge may reach, minor units.'),
    ('cashless_cash_out_fee', '0', 'Fee kept by default when a card is cashed out after the event, minor units.');

-- A card is a ledger account of kind 'card' plus this row. Its status is the card's (a lost card is
-- blocked), distinct from the account's frozen status; replaced_by points at the card that took its balance.
create table pgwallet.cards (
    id            bigint generated always as identity primary key,
    uid           text not null unique check (uid ~ '^[0-9A-Za-z:_-]{1,64}$'),
    account_id    bigint not null unique references pgwallet.accounts (id),
    currency      text not null,
    holder        text check (length(holder) between 1 and 200),
    status        text not null default 'active' check (status in ('active', 'blocked', 'cashed_out')),
    status_reason text check (length(status_reason) <= 200),
    payout_method text not null default 'bank_transfer'
                  check (payout_method in ('bank_transfer', 'stripe_refund', 'cash')),
    replaced_by   bigint references pgwallet.cards (id),
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);

-- A bar (point of sale): its revenue is a collector account, so terminals never queue on one row.
create table pgwallet.bars (
    id                 bigint generated always as identity primary key,
    code               text not null unique check (code ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    name               text not null check (length(name) between 1 and 200),
    currency           text not null,
    revenue_account_id bigint not null references pgwallet.accounts (id),
    created_at         timestamptz not null default now()
);

create table pgwallet.staff (
    id         bigint generated always as identity primary key,
    name       text not null check (length(name) between 1 and 200),
    status     text not null default 'active' check (status in ('active', 'inactive')),
    created_at timestamptz not null default now()
);

-- A checkpoint takes recharges; its cash drawer account records the cash taken in (it goes negative:
-- minus its balance is the cash the drawer should hold) until the drawer is closed.
create table pgwallet.checkpoints (
    id                bigint generated always as identity primary key,
    name              text not null check (length(name) between 1 and 200),
    currency          text not null,
    drawer_account_id bigint not null unique references pgwallet.accounts (id),
    created_at        timestamptz not null default now()
);

-- The festival's own accounts per currency, opened on first use: stripe_clearing, card_terminal_clearing,
-- cash_office, payouts, fees (all collectors that may go negative, except fees).
create table pgwallet.cashless_accounts (
    currency   text not null,
    purpose    text not null check (purpose in ('stripe_clearing', 'card_terminal_clearing', 'cash_office',
                                                'payouts', 'fees')),
    account_id bigint not null references pgwallet.accounts (id),
    primary key (currency, purpose)
);

-- Orders, their items and refunds: no foreign keys (the insert path of every order, as for transfers).
create table pgwallet.bar_orders (
    id                bigint generated always as identity primary key,
    card_id           bigint not null,
    bar_id            bigint not null,
    currency          text not null,
    total_amount      bigint not null check (total_amount > 0),
    refunded_amount   bigint not null default 0,
    client_request_id text not null unique,
    operation_id      bigint not null,
    transfer_id       bigint not null,
    created_at        timestamptz not null default now(),
    check (refunded_amount between 0 and total_amount)
);

create table pgwallet.bar_order_items (
    order_id          bigint not null,
    line              smallint not null,
    sku               text not null,
    name              text not null,
    quantity          integer not null check (quantity > 0),
    unit_price        bigint not null check (unit_price > 0),
    refunded_quantity integer not null default 0,
    primary key (order_id, line),
    check (refunded_quantity between 0 and quantity)
);

create table pgwallet.bar_refunds (
    id                bigint generated always as identity primary key,
    order_id          bigint not null,
    amount            bigint not null check (amount > 0),
    items             jsonb,
    client_request_id text not null unique,
    operation_id      bigint not null,
    created_at        timestamptz not null default now()
);
create index bar_refunds_order_idx on pgwallet.bar_refunds (order_id);

create table pgwallet.recharges (
    id                bigint generated always as identity primary key,
    card_id           bigint not null,
    amount            bigint not null check (amount > 0),
    currency          text not null,
    method            text not null check (method in ('stripe', 'cash', 'card')),
    stripe_session_id text unique,
    client_request_id text unique,
    staff_id          bigint,
    checkpoint_id     bigint,
    operation_id      bigint not null,
    metadata          jsonb not null default '{}',
    created_at        timestamptz not null default now(),
    check ((method = 'stripe') = (stripe_session_id is not null)),
    check ((method = 'stripe') = (staff_id is null and checkpoint_id is null and client_request_id is null))
);
create index recharges_card_idx on pgwallet.recharges (card_id);

-- NFC scan log: insert-only, written by lookups (never by the order path); BRIN on time is all reads need.
create table pgwallet.card_scans (
    scanned_at timestamptz not null default now(),
    uid        text not null,
    card_id    bigint,
    status     text not null check (status in ('found', 'unknown', 'blocked')),
    location   text,
    device     text
);
create index card_scans_time_idx on pgwallet.card_scans using brin (scanned_at);

create table pgwallet.drawer_closings (
    id                bigint generated always as identity primary key,
    checkpoint_id     bigint not null,
    staff_id          bigint not null,
    currency          text not null,
    expected_amount   bigint not null,
    counted_amount    bigint not null check (counted_amount >= 0),
    operation_id      bigint,
    client_request_id text not null unique,
    created_at        timestamptz not null default now()
);

-- One cash-out per card, after the event: the remaining balance minus the fee, to the payout method.
create table pgwallet.card_cashouts (
    id                bigint generated always as identity primary key,
    card_id           bigint not null unique,
    amount            bigint not null check (amount >= 0),
    fee               bigint not null check (fee >= 0),
    payout_method     text not null,
    operation_id      bigint,
    client_request_id text not null unique,
    created_at        timestamptz not null default now()
);

reset role;
