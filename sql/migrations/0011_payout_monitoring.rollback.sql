-- Drops the payout monitoring views.
set local role pgwallet_owner;
drop view if exists pgwallet.payout_processing_speed, pgwallet.payout_failed_entries,
    pgwallet.payout_success_rate_24h, pgwallet.payout_active_jobs;
reset role;
