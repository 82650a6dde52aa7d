-- Performer queues with escrow, and tip-grid purchases: per-performer queue settings, queue items,
-- tip menu items and purchased items, and the queue's error codes (W0020-W0029).
-- depends: 0002_ledger

set local role pgwallet_owner;

insert into pgwallet.error_catalogue (code, sqlstate, http_status, message) values
    ('QUEUE_FULL',         'W0020', 409, 'The performer''s queue is full'),
    ('ALREADY_PROCESSING', 'W0021', 409, 'The performer is already performing another item');

insert into pgwallet.settings (name, value, description) values
    ('queue_events', 'on', 'on: every queue transition notifies channel pgwallet_queue_<performer_id> at once; '
                           'outbox: it is stored in pgwallet.queue_events and sent by relay_queue_events; off: none.');

-- One row per performer who takes paid requests: where the platform fee goes, how much it is, how many
-- items may wait, and the timeouts of the sweep. Enqueues and starts lock this row (never the account).
create table pgwallet.performer_queues (
    performer_id          bigint primary key references pgwallet.accounts (id),
    fee_account_id        bigint not null references pgwallet.accounts (id),
    fee_bps               integer not null default 2000 check (fee_bps between 0 and 10000),
    max_open              integer not null default 50 check (max_open between 1 and 10000),
    start_timeout_seconds integer not null default 1800 check (start_timeout_seconds > 0),
    grace_percent         integer not null default 200 check (grace_percent between 100 and 100000),
    next_ticket           bigint not null default 1,
    created_at            timestamptz not null default now(),
    updated_at            timestamptz not null default now(),
    check (performer_id <> fee_account_id)
);
comment on column pgwallet.performer_queues.next_ticket is
    'Tickets only grow: an item''s position is the number of open items before it, never a stored column.';

create sequence pgwallet.queue_items_id_seq;

create table pgwallet.queue_items (
    id                        bigint primary key default nextval('pgwallet.queue_items_id_seq'),
    idempotency_key           text not null unique check (length(idempotency_key) between 1 and 300),
    source_feature            text not null check (source_feature ~ '^[a-z][a-z0-9_]{0,62}$'),
    source_event_id           text check (length(source_event_id) between 1 and 255),
    performer_id              bigint not null references pgwallet.performer_queues (performer_id),
    user_id                   bigint not null,
    hold_id                   bigint not null unique references pgwallet.holds (id),
    tokens                    bigint not null check (tokens > 0),
    fee_account_id            bigint not null,
    fee                       bigint not null check (fee >= 0 and fee <= tokens),
    title                     text not null check (length(title) between 1 and 200),
    description               text check (length(description) <= 2000),
    expected_duration_seconds integer not null check (expected_duration_seconds > 0),
    metadata                  jsonb not null default '{}',
    status                    text not null check (status in ('CREATED', 'STARTED', 'FINISHED', 'ABANDONED',
                                                              'REFUNDED')),
    pass_through              boolean not null default false,
    ticket                    bigint,
    created_at                timestamptz not null default now(),
    started_at                timestamptz,
    finished_at               timestamptz,
    abandoned_at              timestamptz,
    refunded_at               timestamptz,
    settled                   boolean not null default false,
    settled_at                timestamptz,
    settlement_transfer_id    bigint,
    fee_transfer_id           bigint,
    refund_reason             text check (length(refund_reason) <= 500),
    unique (performer_id, ticket),
    check (pass_through = (ticket is null)),
    check (settled = (status in ('FINISHED', 'ABANDONED', 'REFUNDED'))),
    check (settled = (settled_at is not null)),
    check ((status = 'FINISHED') = (settlement_transfer_id is not null)),
    check ((status = 'STARTED') <= (started_at is not null)),
    check ((status = 'FINISHED') = (finished_at is not null)),
    check ((status = 'ABANDONED') = (abandoned_at is not null)),
    check ((status = 'REFUNDED') = (refunded_at is not null))
);
comment on table pgwallet.queue_items is
    'Paid requests to a performer; tokens are held (hold_id) until the item is finished (captured) or abandoned/refunded (voided).';
-- The open queue of a performer, in ticket order: positions, depth and waits are counted from here alone.
create index queue_items_open_idx on pgwallet.queue_items (performer_id, ticket)
    include (status, expected_duration_seconds, started_at)
    where status in ('CREATED', 'STARTED');
-- At most one item being performed per performer (second line of defence behind the queue row lock).
create unique index queue_items_one_started_idx on pgwallet.queue_items (performer_id) where status = 'STARTED';
create index queue_items_user_idx on pgwallet.queue_items (user_id, id);

-- With setting queue_events = 'outbox': events waiting for relay_queue_events (which sends and deletes them).
create table pgwallet.queue_events (
    id         bigint generated always as identity primary key,
    channel    text not null,
    payload    jsonb not null,
    created_at timestamptz not null default now()
);

create table pgwallet.tip_menu_items (
    id                        bigint generated always as identity primary key,
    performer_id              bigint not null references pgwallet.performer_queues (performer_id),
    title                     text not null check (length(title) between 1 and 200),
    price                     bigint not null check (price > 0),
    expected_duration_seconds integer not null default 60 check (expected_duration_seconds > 0),
    active                    boolean not null default true,
    created_at                timestamptz not null default now(),
    updated_at                timestamptz not null default now()
);
create index tip_menu_items_performer_idx on pgwallet.tip_menu_items (performer_id, id);

create table pgwallet.purchased_items (
    id               bigint generated by default as identity primary key,  -- taken first, for the queue item
    idempotency_key  text not null unique check (length(idempotency_key) between 1 and 255),
    user_id          bigint not null,
    performer_id     bigint not null,
    tip_menu_item_id bigint not null references pgwallet.tip_menu_items (id),
    title            text not null,
    price            bigint not null check (price > 0),
    execution_mode   text not null check (execution_mode in ('IMMEDIATE', 'QUEUED')),
    status           text not null check (status in ('PENDING', 'SUCCESS', 'REFUNDED')),
    queue_item_id    bigint not null unique references pgwallet.queue_items (id),
    settled          boolean not null default false,
    settled_at       timestamptz,
    notified_at      timestamptz,
    refunded_at      timestamptz,
    created_at       timestamptz not null default now(),
    check (settled = (status = 'SUCCESS')),
    check ((status = 'SUCCESS') = (notified_at is not null)),
    check ((status = 'REFUNDED') = (refunded_at is not null))
);
create index purchased_items_user_idx on pgwallet.purchased_items (user_id, id);

-- The queue is the only authority over its escrow: a hold placed for a queue item (metadata queue_item_id)
-- changes status only while the queue settles that item (it names the item in the transaction-local
-- setting pgwallet.queue_settling). A feature calling capture_hold or void_hold on it is refused.
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

reset role;
