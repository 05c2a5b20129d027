//! One module per `meshctl` command. Each returns the process exit code on success; an error
//! is printed by the caller and exits 1 (`analyze` maps its own failures to 3).

pub mod analyze;
pub mod completion;
pub mod dataplane;
pub mod precheck;
pub mod version;
pub mod waypoint;
pub mod ztunnel_config;

use std::time::Duration;

/// How often waits poll.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Exit code of a command that did what was asked.
pub const EXIT_OK: u8 = 0;
/// Exit code of a command whose check or wait failed.
pub const EXIT_FAILED: u8 = 1;
