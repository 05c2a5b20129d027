//! A stand-in for the node agent: records the plugin's requests and answers them all alike.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use cni::api::{PluginRequest, PluginResponse};

pub struct FakeAgent {
    pub socket: PathBuf,
    requests: Arc<Mutex<Vec<PluginRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAgent {
    /// Listens on `dir/agent.sock` and answers every request with `answer`.
    pub fn start(dir: &Path, answer: PluginResponse) -> Self {
        let socket = dir.join("agent.sock");
        let listener = UnixListener::bind(&socket).expect("bind fake agent");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopping) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_err() {
                    continue;
                }
                if let Ok(req) = serde_json::from_str::<PluginRequest>(line.trim_end()) {
                    reqs.lock().expect("lock").push(req);
                }
                let mut out = serde_json::to_vec(&answer).expect("encode");
                out.push(b'\n');
                let _ = conn.write_all(&out);
            }
        });
        Self {
            socket,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> Vec<PluginRequest> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
