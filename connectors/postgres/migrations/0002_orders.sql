-- The read model of order-status and inventory-result.

-- One row per order: its state after its latest transition.
create table orders (
    order_id         text primary key,
    user_id          text    not null,
    state            text    not null,
    terminal         boolean not null,
    reason           text,
    total_minor      bigint  not null,
    currency         text    not null,
    coupon_id        text,
    payment_id       text,
    refund_id        text,
    version          int     not null,
    source_partition int     not null,
    source_offset    bigint  not null,
    updated_at       timestamptz not null
);
create index orders_user on orders (user_id);
create index orders_state on orders (state);

-- The order's lines as the saga took them (from its first transition).
create table order_lines (
    order_id         text   not null,
    line             int    not null,
    product_id       text   not null,
    quantity         int    not null,
    unit_price_minor bigint not null,
    primary key (order_id, line)
);
create index order_lines_product on order_lines (product_id);

-- Every order-status record, transitions and answers alike.
create table order_status_history (
    order_id          text   not null,
    source_partition  int    not null,
    source_offset     bigint not null,
    version           int    not null,
    event             text   not null,
    state             text   not null,
    reason            text,
    cancel_request_id text,
    refund_id         text,
    occurred_at       timestamptz not null,
    primary key (order_id, source_partition, source_offset)
);

-- One row per product: its stock after its latest inventory decision.
create table product_stock (
    product_id       text primary key,
    available        bigint not null,
    reserved         bigint not null,
    sold             bigint not null,
    created          bigint not null,
    source_partition int    not null,
    source_offset    bigint not null,
    updated_at       timestamptz not null
);
