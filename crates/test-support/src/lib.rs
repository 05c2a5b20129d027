//! Helpers for the mesh's tests. Not shipped.
