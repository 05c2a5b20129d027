pub mod agent;
pub mod plugin;
