-- pgwallet cashless benchmark: the same bar order of three items (9.00) from a random card, every
-- terminal on ONE bar (bench-bar-0): its revenue collector must not become a hot row.
-- Variables (pgbench -D, set by bench/cashless.py): card_first, ncards (see bar_order_many_bars.sql).
\set a random(0, :ncards - 1)
\set card_id :card_first + :a
select pgwallet.process_bar_order(:card_id,
    '[{"sku": "beer", "name": "Beer", "quantity": 1, "unit_price": 450},
      {"sku": "water", "name": "Water", "quantity": 1, "unit_price": 200},
      {"sku": "crisps", "name": "Crisps", "quantity": 1, "unit_price": 250}]', 900,
    gen_random_uuid()::text, 'bench-bar-0');
