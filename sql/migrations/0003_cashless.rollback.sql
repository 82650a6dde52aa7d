-- The cashless procedures read these tables: drop them first (only this domain's functions, by name).
do $$
declare
    f regprocedure;
begin
    for f in select p.oid::regprocedure from pg_catalog.pg_proc p
             where p.pronamespace = 'pgwallet'::regnamespace
               and p.proname in ('cashless_account', 'card_json', 'lock_card', 'issue_card', 'get_card',
                                 'lookup_card', 'set_card_status', 'replace_card', 'card_history',
                                 'create_bar', 'create_staff', 'set_staff_status', 'create_checkpoint',
                                 'process_bar_order', 'refund_bar_order', 'get_bar_order',
                                 'process_stripe_recharge', 'process_checkpoint_recharge', 'close_drawer',
                                 'cash_out_card', 'cards_to_cash_out', 'cash_out_cards',
                                 'recharge_json', 'get_checkpoint') loop
        execute pg_catalog.format('drop routine %s', f);
    end loop;
end
$$;
drop table if exists pgwallet.card_cashouts;
drop table if exists pgwallet.drawer_closings;
drop table if exists pgwallet.card_scans;
drop table if exists pgwallet.recharges;
drop table if exists pgwallet.bar_refunds;
drop table if exists pgwallet.bar_order_items;
drop table if exists pgwallet.bar_orders;
drop table if exists pgwallet.cashless_accounts;
drop table if exists pgwallet.checkpoints;
drop table if exists pgwallet.staff;
drop table if exists pgwallet.bars;
drop table if exists pgwallet.cards;
delete from pgwallet.settings where name in ('cashless_recharge_min', 'cashless_recharge_max',
                                             'cashless_card_balance_max', 'cashless_cash_out_fee');
delete from pgwallet.error_catalogue where sqlstate between 'W0012' and 'W0019';
