-- Drops the queue's procedures (they read its tables), its guard on holds, its tables, settings and error codes.
drop trigger if exists holds_queue_guard on pgwallet.holds;
drop function if exists pgwallet.guard_queue_hold();
do $$
declare
    f regprocedure;
begin
    for f in select p.oid::regprocedure from pg_catalog.pg_proc p
             where p.pronamespace = 'pgwallet'::regnamespace
               and p.proname in ('configure_performer_queue', 'create_queue_item', 'enqueue_item', 'start_item',
                                 'complete_item', 'abandon_item', 'refund_item', 'release_queue_item',
                                 'queue_item_json', 'queue_position', 'notify_queue_item', 'get_queue_item',
                                 'get_queue_position', 'get_queue_depth', 'get_performer_queue',
                                 'get_user_queue_history', 'expire_stale_queue_items', 'create_tip_menu_item',
                                 'set_tip_menu_item_active', 'get_tip_menu', 'purchase_tip_grid_item',
                                 'settle_purchased_item', 'purchased_item_json', 'get_purchased_item',
                                 'lock_queue_item', 'performer_queue_json', 'tip_menu_item_json',
                                 'send_queue_event', 'relay_queue_events', 'give_back_item') loop
        execute pg_catalog.format('drop routine %s', f);
    end loop;
end
$$;
drop table if exists pgwallet.purchased_items;
drop table if exists pgwallet.tip_menu_items;
drop table if exists pgwallet.queue_events;
drop table if exists pgwallet.queue_items;
drop sequence if exists pgwallet.queue_items_id_seq;
drop table if exists pgwallet.performer_queues;
delete from pgwallet.error_catalogue where code in ('QUEUE_FULL', 'ALREADY_PROCESSING');
delete from pgwallet.settings where name = 'queue_events';
