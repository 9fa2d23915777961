//! Transform configurations: what users write, validated into operator specs.

pub mod filter;
pub mod labels;
pub mod window;
