-- pgwallet benchmark: one transfer of 1 minor unit between two DIFFERENT ordinary card accounts,
-- picked uniformly at random (per transaction: an idempotency key, two row locks, two entries).
-- Variables, passed by bench/run.py with pgbench -D (card ids form the contiguous range
-- card_first .. card_first + ncards - 1):
--   card_first  id of the first card account
--   ncards      number of card accounts (>= 2)
\set a random(0, :ncards - 1)
\set d random(1, :ncards - 1)
\set b (:a + :d) % :ncards
\set a_id :card_first + :a
\set b_id :card_first + :b
select pgwallet.transfer(:a_id, :b_id, 1, gen_random_uuid()::text);
