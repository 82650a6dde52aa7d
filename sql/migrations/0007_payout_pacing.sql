-- Payout pacing: batches count themselves in their own sequence, so a payout worker can tell other
-- money movements (pgwallet.operation_id_seq counts every operation, batches included) from the
-- batches of its fellow workers, and give way to live traffic.
-- depends: 0006_investments

set local role pgwallet_owner;

create sequence pgwallet.payout_batches_seq;

reset role;
