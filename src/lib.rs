//! kiln: turn a Rust project into a minimal, byte-for-byte reproducible
//! container image.
//!
//! The library is organised around one idea (see ARCHITECTURE.md in the
//! repository): an image is a value ([`image::Image`]) made of a config, a
//! manifest and layers whose bytes are produced once, hashed once, and then
//! written unchanged to any sink ([`store`]). Layers come from [`layer`],
//! which writes tar streams whose bytes depend only on the content and the
//! explicit inputs ([`layer::Timestamp`], modes, owners), never on the host.
//! Every command runs with an explicit [`context::Context`]; the library
//! keeps no process globals.

pub mod assemble;
pub mod attest;
pub mod builder;
pub mod cache;
pub mod check;
pub mod config;
pub mod context;
pub mod digest;
pub mod elf;
pub mod error;
pub mod image;
pub mod init;
pub mod layer;
pub mod oci;
pub mod progress;
pub mod reference;
pub mod scan;
pub mod settings;
pub mod sign;
pub mod store;
pub mod text;
pub mod time;
pub mod verify;

pub use error::{Error, Result};

/// Version of the assembly format: the byte-level rules for tar headers,
/// ordering, compression and JSON. It is recorded nowhere in an image; it is
/// changed on purpose, together with the golden digests in the tests, when
/// kiln's output bytes change for the same inputs.
pub const ASSEMBLY_FORMAT_VERSION: u32 = 1;
