-- pgwallet benchmark: every client pays 1 minor unit from a random card into the SAME collector
-- (revenue) account. The collector keeps its balance in slots, so payers should not serialize on it.
-- Variables (pgbench -D, set by bench/run.py):
--   card_first    id of the first card account (cards are card_first .. card_first + ncards - 1)
--   ncards        number of card accounts
--   collector_id  id of the one revenue (collector) account
\set a random(0, :ncards - 1)
\set a_id :card_first + :a
select pgwallet.transfer(:a_id, :collector_id, 1, gen_random_uuid()::text);
