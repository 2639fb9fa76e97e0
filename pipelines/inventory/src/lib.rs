//! The inventory pipeline: reads inventory-commands (keyed by product id, so
//! one product's admin commands and the saga's reservations for it are
//! totally ordered in one partition), emits exactly one decision per command
//! to inventory-result and answers every saga command on order-replies.
//!
//! `ledger` owns the per-partition stock and reservations and their
//! changelog encoding; `decide` holds the business rules and nothing else.

pub mod decide;
pub mod ledger;

pub use decide::InventoryProcessor;
pub use ledger::{InventoryBook, InventoryChange, Reservation, ReservationStatus, Stock};
