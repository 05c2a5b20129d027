//! Helpers for the mesh's tests. Not shipped.

pub mod eventually;
pub use eventually::eventually;
