//! `kiln init`.
pub mod dockerfile;
