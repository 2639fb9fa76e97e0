//! What every surge process shares: layered settings, telemetry (logs,
//! Prometheus metrics, health) and the shutdown signal. Nothing here knows
//! about coupons or orders.

pub mod service;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use settings::{Settings, SettingsError};
