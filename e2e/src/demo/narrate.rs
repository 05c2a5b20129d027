//! Printing the demo's story: numbered steps, what is being done, what was seen.

use std::io::Write;

/// Writes the demo's narration to stdout.
#[derive(Debug, Default)]
pub struct Narrator {
    step: usize,
}

impl Narrator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts step N with a title.
    pub fn step(&mut self, title: &str) -> String {
        self.step += 1;
        let name = format!("{}. {title}", self.step);
        println!("\n=== {name} ===");
        flush();
        name
    }

    /// What the demo is doing now.
    pub fn doing(&self, text: &str) {
        for (i, line) in text.lines().enumerate() {
            println!("  {} {line}", if i == 0 { "->" } else { "  " });
        }
        flush();
    }

    /// What the demo observed.
    pub fn saw(&self, text: &str) {
        for (i, line) in text.lines().enumerate() {
            println!("  {} {line}", if i == 0 { "<-" } else { "  " });
        }
        flush();
    }

    /// A check that held.
    pub fn ok(&self, text: &str) {
        println!("  ok: {text}");
        flush();
    }
}

fn flush() {
    let _ = std::io::stdout().flush();
}
