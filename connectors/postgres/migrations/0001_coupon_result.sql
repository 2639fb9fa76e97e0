-- The read model of coupon-result, and the sink's own offsets.

-- One row per coupon: its state after the latest decision.
create table coupons (
    coupon_id        text primary key,
    stock            bigint not null,
    issued           bigint not null,
    remaining        bigint not null,
    source_partition int    not null,
    source_offset    bigint not null,
    updated_at       timestamptz not null
);

-- One row per unit issued: unique per (coupon, user).
create table issued_coupons (
    coupon_id  text   not null,
    user_id    text   not null,
    sequence   bigint not null,
    request_id text   not null unique,
    issued_at  timestamptz not null,
    primary key (coupon_id, user_id)
);
create unique index issued_coupons_sequence on issued_coupons (coupon_id, sequence);

-- One row per request: what the gateway polls by request id.
create table coupon_decisions (
    request_id       text primary key,
    coupon_id        text   not null,
    user_id          text,
    outcome          text   not null,
    sequence         bigint,
    stock            bigint not null,
    issued           bigint not null,
    remaining        bigint not null,
    reason           text,
    source_partition int    not null,
    source_offset    bigint not null,
    requested_at     timestamptz not null,
    decided_at       timestamptz not null
);
create index coupon_decisions_coupon on coupon_decisions (coupon_id);

-- Where each sink resumes: written in the same transaction as the rows.
create table sink_offsets (
    sink        text   not null,
    topic       text   not null,
    partition   int    not null,
    next_offset bigint not null,
    primary key (sink, topic, partition)
);
