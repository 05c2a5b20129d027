//! The narrated demo behind `make demo`.
