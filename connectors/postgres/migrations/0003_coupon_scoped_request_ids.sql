-- A request id names a request of one coupon (issue 14): the coupon
-- pipeline decides `r1` for coupon c1 and `r1` for coupon c2 as two
-- requests (only a coupon's own partition can decide its requests, and
-- partitions cannot tell each other which ids are taken), so both
-- decisions are kept, each under (coupon_id, request_id).

alter table coupon_decisions drop constraint coupon_decisions_pkey;
alter table coupon_decisions add primary key (coupon_id, request_id);
-- The gateway's poll by request id alone (GET /coupon-requests/{requestId}).
create index coupon_decisions_request on coupon_decisions (request_id);
-- Covered by the primary key's leading column.
drop index coupon_decisions_coupon;

alter table issued_coupons drop constraint issued_coupons_request_id_key;
alter table issued_coupons add constraint issued_coupons_request unique (coupon_id, request_id);
