-- Drops the batch counter. Roll back together with the code of before (whose process_payout_batch does
-- not count batches): `pgwallet migrate` of that code re-installs its procedures.
drop sequence if exists pgwallet.payout_batches_seq;
drop function if exists pgwallet.payout_clocks();
