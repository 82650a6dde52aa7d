-- pgwallet benchmark: every client pays 1 minor unit from a random card into a random one of many
-- distinct ordinary payee (merchant) accounts. This is the baseline for transfer_collector.sql: same
-- work per transaction, but the credits are spread over many rows instead of one collector account.
-- Variables (pgbench -D, set by bench/run.py):
--   card_first   id of the first card account (cards are card_first .. card_first + ncards - 1)
--   ncards       number of card accounts
--   payee_first  id of the first payee account (payees are payee_first .. payee_first + npayees - 1)
--   npayees      number of payee accounts
\set a random(0, :ncards - 1)
\set p random(0, :npayees - 1)
\set a_id :card_first + :a
\set p_id :payee_first + :p
select pgwallet.transfer(:a_id, :p_id, 1, gen_random_uuid()::text);
