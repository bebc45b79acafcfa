//! The simulated payment world with ground truth.
//!
//! [`World`] draws payers, pay schedules,
//! liquidity, declines and channel responsiveness from [`WorldConfig`] and a
//! seed; any policy can be run inside it with [`World::step`], and
//! [`World::true_success_probability`] gives the oracle its upper bound.
//! [`generate`] writes the history a logging policy would have produced;
//! [`zoo`] holds structurally different worlds and logging policies.
//!
//! Side: learning (fits or evaluates over a loaded history or the simulator; in the binary crate, beside the edges).

pub mod config;
pub mod generate;
pub mod world;
pub mod zoo;

pub use config::{WorldConfig, WorldParams};
pub use world::{Action, Closed, Episode, EpisodeState, Payer, StepResult, World};
