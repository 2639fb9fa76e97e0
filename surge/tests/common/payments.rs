//! Shared by the payment tests: `surge pg-sim` as a child process on its
//! own ledger schema, the payment pipeline pointed at it, and the ledger
//! read back as the audit's [`LedgerPayment`]s.

use std::time::Duration;

use surge_order::audit::LedgerPayment;
use surge_schemas::order::PaymentKind;

use super::coupon::{Fixture, Instance};

/// A running pg-sim: its process, API root and ledger schema.
pub struct PgSim {
    pub process: Instance,
    pub url: String,
    pub schema: String,
}

/// Starts pg-sim for `fx` with `faults` (`SURGE_PG_SIM__FAULTS__*` values).
pub fn start_pg_sim(fx: &Fixture, faults: &[(&str, &str)]) -> PgSim {
    let schema = format!(
        "pgsim_{}",
        fx.prefix.trim_end_matches('-').replace('-', "_")
    )
    .to_ascii_lowercase();
    let vars: Vec<(String, String)> = faults
        .iter()
        .map(|(k, v)| {
            (
                format!("SURGE_PG_SIM__FAULTS__{}", k.to_uppercase()),
                v.to_string(),
            )
        })
        .collect();
    let mut env: Vec<(&str, &str)> = vec![
        ("SURGE_PG_SIM__LISTEN", "127.0.0.1:0"),
        ("SURGE_PG_SIM__SCHEMA", schema.as_str()),
    ];
    env.extend(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let log = fx.logs.join("pg-sim.log");
    let _ = std::fs::remove_file(&log);
    let process = fx.spawn("pg-sim", &["pg-sim"], &env);
    super::wait_for_log(&log, "pg-sim listening", Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    let address = text
        .split("pg-sim listening address=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("pg-sim logs its address")
        .to_string();
    PgSim {
        process,
        url: format!("http://{address}"),
        schema,
    }
}

/// Starts the payment pipeline against `sim`, with extra `env`.
pub fn spawn_payment(fx: &Fixture, sim: &PgSim, env: &[(&str, &str)]) -> Instance {
    let mut all = vec![
        ("SURGE_PIPELINES__PAYMENT__METRICS_LISTEN", "127.0.0.1:0"),
        ("SURGE_PAYMENT__URL", sim.url.as_str()),
        ("SURGE_PAYMENT__CALL_TIMEOUT", "1s"),
        ("SURGE_PAYMENT__RETRY_MAX", "1s"),
        ("SURGE_LOG__LEVEL", "info,librdkafka=warn"),
    ];
    all.extend_from_slice(env);
    fx.spawn("pipeline-payment", &["pipeline", "payment"], &all)
}

/// Changes pg-sim's faults at run time.
pub async fn set_faults(sim: &PgSim, faults: serde_json::Value) {
    let r = reqwest::Client::new()
        .put(format!("{}/admin/faults", sim.url))
        .json(&faults)
        .send()
        .await
        .expect("pg-sim admin");
    assert!(r.status().is_success(), "PUT /admin/faults: {}", r.status());
}

/// Every definite payment pg-sim recorded.
pub async fn ledger(fx: &Fixture, sim: &PgSim) -> Vec<LedgerPayment> {
    let pool = sqlx::PgPool::connect(&fx.settings.postgres.url)
        .await
        .expect("postgres");
    let entries = surge_pgsim::ledger::Ledger::new(pool.clone(), &sim.schema)
        .expect("schema name")
        .definite_payments()
        .await
        .expect("the ledger");
    pool.close().await;
    entries
        .into_iter()
        .map(|e| LedgerPayment {
            key: e.key,
            kind: match e.kind {
                surge_pgsim::payment::Kind::Charge => PaymentKind::Charge,
                surge_pgsim::payment::Kind::Refund => PaymentKind::Refund,
            },
            approved: e.approved,
            order_id: e.order_id,
            amount: e.amount_minor,
        })
        .collect()
}
