pub mod app;
pub mod cli;
