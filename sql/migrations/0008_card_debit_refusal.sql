-- An account may refuse debits with a catalogued error. A blocked, replaced or cashed-out card's account
-- refuses them with CARD_BLOCKED in every ledger call (transfer, post_operation, place_hold), not only in
-- the card's own procedures, while it still takes credits (a Stripe payment, a refund).
-- depends: 0007_payout_pacing

set local role pgwallet_owner;

-- No foreign key to error_catalogue: every transfer updates accounts, and a trigger there costs every one of
-- them; pgwallet.set_debit_refusal, the only writer, checks the code against the catalogue.
alter table pgwallet.accounts add column debit_refusal text;
comment on column pgwallet.accounts.debit_refusal is
    'When set, every debit of this account is refused with this error code (a blocked card: CARD_BLOCKED).';

update pgwallet.accounts a set debit_refusal = 'CARD_BLOCKED'
from pgwallet.cards c
where c.account_id = a.id and c.status <> 'active';

reset role;
