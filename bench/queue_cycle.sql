-- pgwallet queue benchmark: one create -> start -> complete cycle of a queue item per transaction (three
-- calls, three commits): hold the tokens, start the item, capture them to the performer minus the fee.
-- Each client works on performers of its own (client_id * per_client .. + per_client - 1), as a performer
-- works through one queue at a time; users are shared by every client. Variables (pgbench -D, set by
-- bench/queue.py, which passes the queue's accounts in bench/run.py's layout):
--   card_first, ncards     the funded TOKEN user wallets (contiguous ids), wallet N owned by user 'uN'
--   payee_first, npayees   the performers, each with a configured queue (contiguous ids)
--   collector_id           the platform's fee collector
\set per_client :npayees / 64
\set p_id :payee_first + :client_id * :per_client + random(0, :per_client - 1)
\set u_id :card_first + random(0, :ncards - 1)
select (pgwallet.create_queue_item(:p_id, :u_id, 10, 'bench', gen_random_uuid()::text, p_acting_user => 'u' || :u_id) ->> 'item_id') as item_id \gset
select pgwallet.start_item(:item_id, gen_random_uuid()::text);
select pgwallet.complete_item(:item_id, gen_random_uuid()::text);
