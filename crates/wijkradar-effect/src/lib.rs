//! Did an intervention work?
//!
//! Pure computation, no IO: the server hands in released figures per wijk
//! and period, and gets back an estimate with its interval and diagnostics.
//! - [`sdid`]: synthetic difference-in-differences, synthetic control and
//!   plain difference-in-differences on a [`Panel`].
//! - [`placebo`]: inference by placebo in space.
//! - [`poisson`]: the check with a Poisson model with area and period effects.
//! - [`design`]: one intervention's analysis from released cells: pooling,
//!   suppressed cells, the smallest detectable effect, progress to the goal.

pub mod design;
pub mod panel;
pub mod placebo;
pub mod poisson;
pub mod sdid;

pub use panel::Panel;
pub use sdid::{Estimate, Estimator, estimate};

/// Why an estimate cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EffectError {
    #[error("every unit needs a value for every period")]
    Unbalanced,
    #[error("needs at least one comparison and one treated unit, got {comparison} and {treated}")]
    Units { comparison: usize, treated: usize },
    #[error("needs at least 2 periods before the start and 1 after, got {before} and {after}")]
    Periods { before: usize, after: usize },
    #[error("a value is not a finite number")]
    NotFinite,
    #[error(
        "{donors} usable comparison units give {placebos} placebos; an interval needs at least {}",
        crate::design::MIN_PLACEBOS
    )]
    TooFewComparisons { donors: usize, placebos: usize },
}
