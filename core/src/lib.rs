//! What every surge process shares: layered settings, telemetry (logs,
//! Prometheus metrics, health), the shutdown signal, and the one resolver of
//! topic, subject and group names. Nothing here knows about coupons or
//! orders beyond what their pipelines and topics are called.

pub mod names;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use names::Names;
pub use settings::{Settings, SettingsError};
