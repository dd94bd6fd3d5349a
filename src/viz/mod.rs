//! Pictures of what dace produces: PNG grids of images and line plots of results.

mod grid;
mod plot;

pub use grid::{grid_png, write_grid};
pub use plot::{line_plot, Series};
