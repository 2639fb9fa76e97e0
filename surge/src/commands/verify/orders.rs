//! `surge verify --orders`: invariant 5 of DESIGN.md, from the order topics
//! as a read_committed consumer sees them and from the payment provider's
//! own ledger (pg-sim's `payments` table), with the same audit the tests
//! run (`surge_order::audit`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use surge_core::{Names, Settings};
use surge_kafka::{ClientFactory, TopicReader};
use surge_order::audit::{audit, LedgerPayment, Observed, OrderAudit};
use surge_schemas::coupon::CouponDecision;
use surge_schemas::inventory::InventoryEvent;
use surge_schemas::order::{OrderCancel, OrderCreate, OrderStatus, PaymentKind, PaymentRequest};
use surge_schemas::{Contract, Registry, TopicCodec};
use surge_sink::views::{expected_stock, StockView};

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
    Ok(read_all_at(settings, registry, factory)
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

/// The same with each record's offset.
async fn read_all_at<T: Contract>(
    settings: &Settings,
    registry: &Registry,
    factory: &ClientFactory,
) -> anyhow::Result<Vec<(i64, T)>> {
    let names = Names::from_settings(settings);
    let codec = TopicCodec::<T>::connect(registry, &names.subject(T::TOPIC)).await?;
    let mut reader = TopicReader::open(factory, &names.topic(T::TOPIC), Duration::from_secs(10))?;
    let mut records = reader.read_available(Duration::from_secs(120))?;
    records.sort_by_key(|r| (r.partition, r.offset));
    let mut out = Vec::with_capacity(records.len());
    let mut undecodable = 0usize;
    for r in records {
        match codec.decode(r.payload.as_deref()).await {
            Ok(v) => out.push((r.offset, v)),
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
pub(crate) async fn check(
    settings: &Settings,
    registry: &Registry,
    factory: &ClientFactory,
    ledger: Option<&Ledger>,
    stores: &[super::Store],
) -> anyhow::Result<(OrderAudit, BTreeMap<String, StockView>)> {
    let creates: Vec<OrderCreate> = read_all(settings, registry, factory).await?;
    let cancels: Vec<OrderCancel> = read_all(settings, registry, factory).await?;
    let positioned: Vec<(i64, OrderStatus)> = read_all_at(settings, registry, factory).await?;
    let statuses: Vec<OrderStatus> = positioned.iter().map(|(_, s)| s.clone()).collect();
    let payments: Vec<PaymentRequest> = read_all(settings, registry, factory).await?;
    let inventory: Vec<InventoryEvent> = read_all(settings, registry, factory).await?;
    let coupons: Vec<CouponDecision> = read_all(settings, registry, factory).await?;
    let paid = match ledger {
        Some(l) => Some(read_ledger(l).await?),
        None => None,
    };
    let mut report = audit(&Observed {
        creates: &creates,
        cancels: &cancels,
        statuses: &statuses,
        payments: &payments,
        inventory: &inventory,
        coupons: &coupons,
        ledger: paid.as_deref(),
    });
    report
        .violations
        .extend(super::stores::order_differences(settings, stores, &positioned, &inventory).await?);
    Ok((report, expected_stock(&inventory)))
}

/// Audits, re-reading until the invariants hold or `wait` has run out
/// (sagas still settling look like violations until they end).
pub async fn run(
    settings: &Settings,
    wait: u64,
    ledger: Option<Ledger>,
    stores: Vec<super::Store>,
) -> anyhow::Result<ExitCode> {
    let registry = Registry::new(&settings.registry.url);
    let factory = ClientFactory::new(settings.kafka.clone());
    let deadline = Instant::now() + Duration::from_secs(wait);
    let (report, stock) = loop {
        let (report, stock) =
            check(settings, &registry, &factory, ledger.as_ref(), &stores).await?;
        if report.holds() || Instant::now() >= deadline {
            break (report, stock);
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
    // A sale's few products, each with what is left; a large catalogue in sum.
    if stock.len() <= 20 {
        for (id, s) in &stock {
            println!(
                "  {id:<24} available {:>6}   reserved {:>4}   sold {:>6}",
                s.available, s.reserved, s.sold
            );
        }
    } else {
        let sum = |f: fn(&StockView) -> i64| stock.values().map(f).sum::<i64>();
        println!(
            "  all products             available {:>6}   reserved {:>4}   sold {:>6}",
            sum(|s| s.available),
            sum(|s| s.reserved),
            sum(|s| s.sold)
        );
    }
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
        let stores = match stores.len() {
            0 => " (no store was checked)".to_string(),
            _ => format!(
                "; {} hold exactly what order-status and inventory-result say",
                stores
                    .iter()
                    .map(|s| format!("{s:?}").to_lowercase())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        };
        println!("verify: OK — one terminal state per order, every cancel answered once, stock conserved, coupons used once and given back{money}{stores}");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("verify: FAILED — {} violation(s):", report.violations.len());
        for v in &report.violations {
            println!("  {v}");
        }
        Ok(ExitCode::from(1))
    }
}
