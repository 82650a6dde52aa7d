-- Invariants of the whole system, checked by `pgwallet check` and after every test that moves money.
-- Installed last, so it can read every domain's tables. Each domain adds its own branches to the
-- union below, under a comment naming the domain.

-- check_invariants: one row per violated ledger invariant; no row when the ledger is sound.
-- Locks nothing (reads one snapshot). Raises: nothing.
create or replace function pgwallet.check_invariants()
returns table (invariant text, account_id bigint, currency text, detail text)
language sql
stable
security definer
set search_path = pgwallet, pg_temp
as $$
    -- per currency, all entries sum to zero
    select 'entries_sum_to_zero', null::bigint, e.currency,
           pg_catalog.format('entries sum to %s', e.total)
    from (select t.currency, sum(x.amount) as total
          from pgwallet.entries x join pgwallet.transfers t on t.id = x.transfer_id
          group by t.currency) e
    where e.total <> 0
    union all
    -- every transfer has exactly one debit and one credit entry of its amount, and no entry is orphaned
    select 'transfer_balanced', null, t.currency, pg_catalog.format('transfer %s', t.id)
    from pgwallet.transfers t
    left join pgwallet.entries x on x.transfer_id = t.id
    group by t.id, t.currency, t.debit_account_id, t.credit_account_id, t.amount
    having count(x.id) <> 2
        or count(*) filter (where x.account_id = t.debit_account_id and x.amount = -t.amount) <> 1
        or count(*) filter (where x.account_id = t.credit_account_id and x.amount = t.amount) <> 1
    union all
    select 'transfer_balanced', x.account_id, null, pg_catalog.format('entry %s has no transfer', x.id)
    from pgwallet.entries x
    where not exists (select 1 from pgwallet.transfers t where t.id = x.transfer_id)
    union all
    -- each balance (an ordinary account, or a collector's slot) equals the sum of its entries
    select 'balance_matches_entries', b.id, b.currency,
           pg_catalog.format('balance %s (slot %s), entries sum to %s', b.balance, b.slot, coalesce(s.total, 0))
    from (select a.id, a.currency, null::smallint as slot, a.balance from pgwallet.accounts a where not a.collector
          union all
          select a.id, a.currency, x.slot, x.balance from pgwallet.accounts a
          join pgwallet.account_slots x on x.account_id = a.id) b
    left join (select x.account_id, x.slot, sum(x.amount) as total from pgwallet.entries x
               group by x.account_id, x.slot) s
           on s.account_id = b.id and s.slot is not distinct from b.slot
    where b.balance <> coalesce(s.total, 0)
    union all
    -- held equals the sum of the account's open holds
    select 'held_matches_open_holds', a.id, a.currency,
           pg_catalog.format('held %s, open holds sum to %s', a.held, coalesce(h.total, 0))
    from pgwallet.accounts a
    left join (select h.account_id, sum(h.amount) as total from pgwallet.holds h where h.status = 'open'
               group by h.account_id) h on h.account_id = a.id
    where a.held <> coalesce(h.total, 0)
    union all
    -- no account without allow_negative has a negative available amount
    select 'available_not_negative', b.id, b.currency, pg_catalog.format('available %s', b.available)
    from pgwallet.account_balances b
    where not b.allow_negative and b.available < 0
    union all
    -- a captured hold has exactly its settlement transfer; a voided or expired one has none
    select 'hold_settled_once', h.account_id, h.currency,
           pg_catalog.format('hold %s is %s with %s transfers', h.id, h.status,
                             (select count(*) from pgwallet.transfers t where t.hold_id = h.id))
    from pgwallet.holds h
    where case when h.credit_account_id = h.account_id then
              -- a hold paid in parts (payouts): every part debits its account; settled, the parts sum to
              -- captured_amount and the last one is the settlement transfer
              exists (select 1 from pgwallet.transfers t where t.hold_id = h.id and t.debit_account_id <> h.account_id)
              or (h.status <> 'open' and coalesce((select sum(t.amount) from pgwallet.transfers t
                                                    where t.hold_id = h.id), 0) <> coalesce(h.captured_amount, 0))
              or (h.status = 'captured' and h.settlement_transfer_id is distinct from
                  (select max(t.id) from pgwallet.transfers t where t.hold_id = h.id))
          else case h.status
              when 'captured' then (select count(*) from pgwallet.transfers t
                                    where t.hold_id = h.id and t.amount = h.captured_amount
                                      and t.id = h.settlement_transfer_id) <> 1
                                or (select count(*) from pgwallet.transfers t where t.hold_id = h.id) <> 1
              else exists (select 1 from pgwallet.transfers t where t.hold_id = h.id)
          end end
    union all
    -- cashless: every card is a 'card' account of its own currency
    select 'cashless_card_account', c.account_id, c.currency, pg_catalog.format('card %s', c.id)
    from pgwallet.cards c left join pgwallet.accounts a on a.id = c.account_id
    where a.id is null or a.kind <> 'card' or a.currency <> c.currency
    union all
    -- cashless: a card's account refuses debits (CARD_BLOCKED) exactly when the card is not active
    select 'cashless_blocked_card_refuses_debits', c.account_id, c.currency,
           pg_catalog.format('card %s is %s, its account refuses debits with %s', c.id, c.status,
                             coalesce(a.debit_refusal, 'nothing'))
    from pgwallet.cards c join pgwallet.accounts a on a.id = c.account_id
    where a.debit_refusal is distinct from case when c.status <> 'active' then 'CARD_BLOCKED' end
    union all
    -- cashless: every bar order has its transfer, of its amount, from its card to its bar's revenue
    select 'cashless_order_paid_once', null, o.currency, pg_catalog.format('order %s', o.id)
    from pgwallet.bar_orders o
    where not exists (select 1 from pgwallet.transfers t
                      join pgwallet.cards c on c.id = o.card_id
                      join pgwallet.bars b on b.id = o.bar_id
                      where t.id = o.transfer_id and t.operation_id = o.operation_id and t.kind = 'bar_order'
                        and t.amount = o.total_amount and t.debit_account_id = c.account_id
                        and t.credit_account_id = b.revenue_account_id)
       or o.total_amount <> (select sum(l.quantity * l.unit_price) from pgwallet.bar_order_items l
                             where l.order_id = o.id)
    union all
    -- cashless: an order's refunded amount is the sum of its refunds, and never more than it cost
    select 'cashless_refunds_match', null, o.currency,
           pg_catalog.format('order %s: refunded %s, refunds sum to %s', o.id, o.refunded_amount, coalesce(r.total, 0))
    from pgwallet.bar_orders o
    left join (select order_id, sum(amount) as total from pgwallet.bar_refunds group by order_id) r
           on r.order_id = o.id
    where o.refunded_amount <> coalesce(r.total, 0)
    union all
    -- queue: an item's hold follows it (open while CREATED or STARTED, captured whole when FINISHED, voided
    -- when ABANDONED or REFUNDED), for its tokens, from its user to its performer
    select 'queue_item_hold_follows_item', i.user_id, h.currency,
           pg_catalog.format('queue item %s is %s, its hold %s is %s', i.id, i.status, i.hold_id, h.status)
    from pgwallet.queue_items i
    left join pgwallet.holds h on h.id = i.hold_id
    where h.id is null or h.amount <> i.tokens or h.account_id <> i.user_id or h.credit_account_id <> i.performer_id
       or h.status <> case i.status when 'FINISHED' then 'captured' when 'ABANDONED' then 'voided'
                                    when 'REFUNDED' then 'voided' else 'open' end
       or (i.status = 'FINISHED' and (h.captured_amount <> i.tokens
                                      or h.settlement_transfer_id <> i.settlement_transfer_id))
    union all
    -- queue: a finished item with a fee has exactly its fee transfer (performer -> fee account), one without none
    select 'queue_item_fee_paid_once', i.performer_id, null,
           pg_catalog.format('queue item %s: fee %s, fee transfer %s', i.id, i.fee, i.fee_transfer_id)
    from pgwallet.queue_items i
    left join pgwallet.transfers t on t.id = i.fee_transfer_id
    where i.status = 'FINISHED'
      and case when i.fee = 0 then i.fee_transfer_id is not null
               else t.id is null or t.amount <> i.fee or t.debit_account_id <> i.performer_id
                    or t.credit_account_id <> i.fee_account_id end
    union all
    -- queue: a tip-grid purchase follows its queue item (PENDING while open, SUCCESS once finished, REFUNDED
    -- once abandoned or refunded)
    select 'purchased_item_follows_queue_item', b.user_id, null,
           pg_catalog.format('purchased item %s is %s, queue item %s is %s', b.id, b.status, i.id, i.status)
    from pgwallet.purchased_items b
    join pgwallet.queue_items i on i.id = b.queue_item_id
    where b.status <> case i.status when 'FINISHED' then 'SUCCESS' when 'ABANDONED' then 'REFUNDED'
                                    when 'REFUNDED' then 'REFUNDED' else 'PENDING' end
       or b.price <> i.tokens or b.user_id <> i.user_id
    union all
    -- payouts: each paid entry has exactly its transfer (from the pool's hold, to its winner, of its
    -- amount) and the job's hold has no other transfer: no winner paid twice or without an entry
    select 'payout_paid_once', e.account_id, j.currency, pg_catalog.format('job %s entry %s', j.id, e.id)
    from pgwallet.payout_entries e
    join pgwallet.payout_jobs j on j.id = e.job_id
    left join pgwallet.transfers t on t.id = e.transfer_id
    where (e.status = 'completed' and e.amount > 0)
      and (t.id is null or t.hold_id is distinct from j.hold_id or t.credit_account_id <> e.account_id
           or t.amount <> e.amount)
    union all
    -- payouts: per job, its hold's transfers are its paid entries; entries plus fee are the pool; the
    -- counters match the entries; an open hold holds exactly what pending and failed entries are owed
    -- (one pass over the entries and one over the jobs' transfers, grouped)
    select case when coalesce(t.n, 0) <> coalesce(e.paid_nonzero, 0) then 'payout_paid_once'
                else 'payout_job_consistent' end,
           j.pool_account_id, j.currency,
           pg_catalog.format('job %s: %s hold transfers for %s paid entries; entries %s (%s), paid %s/%s, '
                             'failed %s/%s, cancelled %s/%s, paid amount %s/%s, hold %s %s owed %s',
                             j.id, coalesce(t.n, 0), coalesce(e.paid_nonzero, 0), coalesce(e.total, 0),
                             coalesce(e.n, 0), j.paid_winners, coalesce(e.paid, 0), j.failed_winners,
                             coalesce(e.failed, 0), j.cancelled_winners, coalesce(e.cancelled, 0), j.paid_amount,
                             coalesce(e.paid_amount, 0), h.status, h.amount, coalesce(e.owed, 0))
    from pgwallet.payout_jobs j
    left join pgwallet.holds h on h.id = j.hold_id
    left join (
        select x.job_id, sum(x.amount) as total, count(*) as n,
               count(*) filter (where x.status = 'completed') as paid,
               count(*) filter (where x.status = 'completed' and x.amount > 0) as paid_nonzero,
               count(*) filter (where x.status = 'failed') as failed,
               count(*) filter (where x.status = 'cancelled') as cancelled,
               coalesce(sum(x.amount) filter (where x.status in ('pending', 'failed')), 0) as owed,
               coalesce(sum(x.amount) filter (where x.status = 'completed'), 0) as paid_amount
        from pgwallet.payout_entries x group by x.job_id) e on e.job_id = j.id
    left join (
        select x.hold_id, count(*) as n from pgwallet.transfers x
        where x.hold_id in (select y.hold_id from pgwallet.payout_jobs y)
        group by x.hold_id) t on t.hold_id = j.hold_id
    where coalesce(t.n, 0) <> coalesce(e.paid_nonzero, 0)
       or coalesce(e.total, 0) <> j.payout_total or coalesce(e.n, 0) <> j.total_winners
       or coalesce(e.paid, 0) <> j.paid_winners or coalesce(e.failed, 0) <> j.failed_winners
       or coalesce(e.cancelled, 0) <> j.cancelled_winners or coalesce(e.paid_amount, 0) <> j.paid_amount
       or (h.status = 'open' and h.amount <> coalesce(e.owed, 0))
       or (h.status is distinct from 'open' and coalesce(e.owed, 0) <> 0)
    union all
    -- investments: an executed investment has exactly its transfer (from its wallet to its product's
    -- account, of its amount), and every investment transfer pays an executed investment: none twice
    select 'investment_executed_once', i.wallet_account_id, p.currency,
           pg_catalog.format('investment %s is executed with transfer %s', i.id, i.transfer_id)
    from pgwallet.investments i
    join pgwallet.investment_products p on p.id = i.product_id
    left join pgwallet.transfers t on t.id = i.transfer_id
    where i.status = 'executed'
      and (t.id is null or t.kind <> 'investment' or t.debit_account_id <> i.wallet_account_id
           or t.credit_account_id <> p.account_id or t.amount <> i.amount)
    union all
    select 'investment_executed_once', t.debit_account_id, t.currency,
           pg_catalog.format('transfer %s pays no executed investment', t.id)
    from pgwallet.transfers t
    where t.kind = 'investment'
      and (select count(*) from pgwallet.investments i where i.transfer_id = t.id and i.status = 'executed') <> 1
    union all
    -- dividends: a distributing dividend has its payout job: challenge dividend:<id>, from the product's
    -- dividend account, of the dividend's amount, one entry per holder
    select 'dividend_paid_once', p.dividend_account_id, p.currency, pg_catalog.format('dividend %s', d.id)
    from pgwallet.dividends d
    join pgwallet.investment_products p on p.id = d.product_id
    left join pgwallet.payout_jobs j on j.id = d.payout_job_id
    where d.status = 'distributing'
      and (j.id is null or j.challenge_id <> 'dividend:' || d.id or j.pool_account_id <> p.dividend_account_id
           or j.total_pool <> d.amount or j.total_winners <> d.holders)
$$;

grant execute on function pgwallet.check_invariants() to pgwallet_staff, pgwallet_readonly;
