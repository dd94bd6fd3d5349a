//! Experiment grids: every number of docs/results comes from one of these commands. Each cell's
//! result is written as soon as it finishes and skipped on rerun, so an interrupted grid resumes.

pub mod expansion;
pub mod grid;
pub mod rded;
pub mod stats;
