//! The gateway in front of stores nothing was written to yet: a PostgreSQL
//! database the PostgreSQL sink never started on (no tables) and an empty
//! Redis keyspace. Every read answers as for an id nobody sent — 404 with a
//! JSON error — instead of 503 with the database's "relation does not
//! exist", and the gateway says once, at WARN, why.

mod common;

use common::coupon::Fixture;
use common::gateway::spawn_gateway;

#[tokio::test(flavor = "multi_thread")]
async fn reads_before_the_postgres_sink_ever_ran_are_404_not_503() {
    let fx = Fixture::new("gw-empty").await;
    let db = common::fresh_database(&fx.settings.postgres.url).await;
    let gw = spawn_gateway(&fx, &[("SURGE_POSTGRES__URL", db.as_str())]).await;
    let c = format!("{}nobody", fx.prefix);
    for path in [
        format!("/coupons/{c}"),
        format!("/coupon-requests/{c}-r1"),
        format!("/coupons/{c}/requests/r1"),
        format!("/orders/{c}-o1"),
        format!("/products/{c}-p1"),
    ] {
        let (status, body) = gw.get(&path).await;
        assert_eq!(status, 404, "{path}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            !error.is_empty() && !error.contains("does not exist"),
            "{path}: a JSON error of our own, not the database's: {body}"
        );
    }
    let log = std::fs::read_to_string(fx.logs.join("gateway.log")).unwrap();
    assert_eq!(
        log.matches("PostgreSQL has no surge tables yet").count(),
        1,
        "said once, whatever the number of reads: {log}"
    );
}
