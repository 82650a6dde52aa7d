-- pgwallet cashless benchmark: one bar order of three items (9.00) from a random card, at a random bar
-- of nbars (each bar's revenue is its own collector account). Per transaction: an idempotency key, the
-- card row and its account locked, one revenue slot, the order and its three items.
-- Variables (pgbench -D, set by bench/cashless.py):
--   card_first  id of the first card (cards are card_first .. card_first + ncards - 1)
--   ncards      number of cards
--   nbars       number of bars, codes bench-bar-0 .. bench-bar-(nbars - 1)
\set a random(0, :ncards - 1)
\set card_id :card_first + :a
\set bar random(0, :nbars - 1)
select pgwallet.process_bar_order(:card_id,
    '[{"sku": "beer", "name": "Beer", "quantity": 1, "unit_price": 450},
      {"sku": "water", "name": "Water", "quantity": 1, "unit_price": 200},
      {"sku": "crisps", "name": "Crisps", "quantity": 1, "unit_price": 250}]', 900,
    gen_random_uuid()::text, 'bench-bar-' || :bar);
