//! `surge verify --orders`: invariant 5 of DESIGN.md, from the order topics
//! as a read_committed consumer sees them and from the payment provider's
//! own ledger (pg-sim's `payments` table), with the same audit the tests
//! run (`surge_order::audit`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use surge_core::{Names, Settings};
use surge_kafka::{ClientFactory, TopicReader};
use surge_order::audit::{audit, LedgerPayment, Observed, OrderAudit};
use surge_schemas::coupon::CouponDecision;
use surge_schemas::inventory::InventoryEvent;
use surge_schemas::order::{OrderCancel, OrderCreate, OrderStatus, PaymentKind, PaymentRequest};
use surge_schemas::{Contract, Registry, TopicCodec};

/// Where the provider's ledger is, if it is checked.
pub struct Ledger {
    pub postgres_url: String,
    pub schema: String,
}

/// Every decodable record of `T`'s topic, in log order per partition.
async fn read_all<T: Contract>(
    settings: &Settings,
    registry: &Registry,
    factory: &ClientFactory,
) -> anyhow::Result<Vec<T>> {
    let names = Names::from_settings(settings);
    let codec = TopicCodec::<T>::connect(registry, &names.subject(T::TOPIC)).await?;
    let mut reader = TopicReader::open(factory, &names.topic(T::TOPIC), Duration::from_secs(10))?;
    let mut records = reader.read_available(Duration::from_secs(120))?;
    records.sort_by_key(|r| (r.partition, r.offset));
    let mut out = Vec::with_capacity(records.len());
    let mut undecodable = 0usize;
    for r in records {
        match codec.decode(r.payload.as_deref()).await {
            Ok(v) => out.push(v),
            // Dead-lettered by the pipeline that reads it: not part of any saga.
            Err(_) => undecodable += 1,
        }
    }
    eprintln!(
        "[verify] {}: {} records{}",
        T::TOPIC,
        out.len(),
        if undecodable > 0 {
            format!(", {undecodable} undecodable (not counted)")
        } else {
            String::new()
        }
    );
    Ok(out)
}

/// The provider's ledger: every definite payment.
async fn read_ledger(ledger: &Ledger) -> anyhow::Result<Vec<LedgerPayment>> {
    let pool = sqlx::PgPool::connect(&ledger.postgres_url).await?;
    let entries = surge_pgsim::ledger::Ledger::new(pool.clone(), &ledger.schema)?
        .definite_payments()
        .await?;
    pool.close().await;
    eprintln!(
        "[verify] ledger {}.payments: {} payments",
        ledger.schema,
        entries.len()
    );
    Ok(entries.into_iter().map(audited).collect())
}

/// A ledger entry as the order audit takes it.
pub fn audited(e: surge_pgsim::ledger::LedgerEntry) -> LedgerPayment {
    LedgerPayment {
        key: e.key,
        kind: match e.kind {
            surge_pgsim::payment::Kind::Charge => PaymentKind::Charge,
            surge_pgsim::payment::Kind::Refund => PaymentKind::Refund,
        },
        approved: e.approved,
        order_id: e.order_id,
        amount: e.amount_minor,
    }
}

/// Reads everything and audits once.
async fn check(
    settings: &Settings,
    registry: &Registry,
    factory: &ClientFactory,
    ledger: Option<&Ledger>,
) -> anyhow::Result<OrderAudit> {
    let creates: Vec<OrderCreate> = read_all(settings, registry, factory).await?;
    let cancels: Vec<OrderCancel> = read_all(settings, registry, factory).await?;
    let statuses: Vec<OrderStatus> = read_all(settings, registry, factory).await?;
    let payments: Vec<PaymentRequest> = read_all(settings, registry, factory).await?;
    let inventory: Vec<InventoryEvent> = read_all(settings, registry, factory).await?;
    let coupons: Vec<CouponDecision> = read_all(settings, registry, factory).await?;
    let paid = match ledger {
        Some(l) => Some(read_ledger(l).await?),
        None => None,
    };
    Ok(audit(&Observed {
        creates: &creates,
        cancels: &cancels,
        statuses: &statuses,
        payments: &payments,
        inventory: &inventory,
        coupons: &coupons,
        ledger: paid.as_deref(),
    }))
}

/// Audits, re-reading until the invariants hold or `wait` has run out
/// (sagas still settling look like violations until they end).
pub async fn run(
    settings: &Settings,
    wait: u64,
    ledger: Option<Ledger>,
) -> anyhow::Result<ExitCode> {
    let registry = Registry::new(&settings.registry.url);
    let factory = ClientFactory::new(settings.kafka.clone());
    let deadline = Instant::now() + Duration::from_secs(wait);
    let report = loop {
        let report = check(settings, &registry, &factory, ledger.as_ref()).await?;
        if report.holds() || Instant::now() >= deadline {
            break report;
        }
        eprintln!(
            "[verify] waiting: {} violation(s) (first: {})",
            report.violations.len(),
            report.violations[0]
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    println!("orders     {}", report.orders);
    for (state, n) in &report.by_final_state {
        println!("  {state:<16} {n}");
    }
    println!("cancels refused            {}", report.cancel_refusals);
    println!("paid, then refunded        {}", report.refunded_after_paid);
    println!(
        "late charges refunded      {}",
        report.late_charges_refunded
    );
    println!("products   {}", report.products);
    println!("payment requests           {}", report.payment_requests);
    if ledger.is_some() {
        println!(
            "charged    {}   refunded {}   net {}",
            surge_schemas::Money(report.charged),
            surge_schemas::Money(report.refunded),
            surge_schemas::Money(report.charged - report.refunded)
        );
    }
    if report.holds() {
        let money = if ledger.is_some() {
            ", every PAID order charged once, every cancelled charge refunded once, charges − refunds = PAID total"
        } else {
            " (the provider's ledger was not checked)"
        };
        println!("verify: OK — one terminal state per order, every cancel answered once, stock conserved, coupons used once and given back{money}");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("verify: FAILED — {} violation(s):", report.violations.len());
        for v in &report.violations {
            println!("  {v}");
        }
        Ok(ExitCode::from(1))
    }
}
