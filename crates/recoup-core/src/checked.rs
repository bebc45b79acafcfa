//! Settings checked once (linfa's pattern): what a file, a flag or code writes is a
//! params type; [`Params::check`] refuses a setting no run can be made with and wraps
//! the rest in [`Checked`], the only form the code that uses them takes. The engine's,
//! the simulator's and training's settings all go through it.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use serde::Serialize;

/// Settings that can be checked.
pub trait Params: Sized {
    /// What a refused setting says (naming it).
    type Error;

    /// The first setting no run can be made with, if any.
    fn problem(&self) -> Result<(), Self::Error>;

    /// Check the settings into the only form the code that uses them takes.
    fn check(self) -> Result<Checked<Self>, Self::Error> {
        self.problem()?;
        Ok(Checked(self))
    }
}

/// Checked settings: made only by [`Params::check`] or from the defaults (each params
/// type has a test that its defaults check); read through `Deref` as the params they hold.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(transparent)]
pub struct Checked<P>(P);

impl<P> std::ops::Deref for Checked<P> {
    type Target = P;
    fn deref(&self) -> &P {
        &self.0
    }
}

impl<P: Clone> Checked<P> {
    /// The settings as written, to change some and check them again (or to record them).
    pub fn params(&self) -> P {
        self.0.clone()
    }
}
