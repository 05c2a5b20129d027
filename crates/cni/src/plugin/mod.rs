//! The chained CNI plugin (`mesh-cni`), CNI specification 1.0.0 (and 1.1.0's STATUS and GC).
//!
//! It runs after the interface plugins of a conflist. On ADD it reports the pod (namespace and
//! name from `CNI_ARGS`, container id, netns path, the addresses of `prevResult`) to the node
//! agent, which decides whether the pod is enrolled and, if so, programs its redirection before
//! answering. The plugin then prints `prevResult` unchanged. When the agent says the enrolment
//! failed, or cannot be reached, the plugin fails the ADD so that a pod never starts un-captured
//! when it should be enrolled; the runtime retries. Pods without Kubernetes arguments and pods of
//! `excludeNamespaces` pass through without asking the agent. DEL tells the agent on a
//! best-effort basis and always succeeds; CHECK asks the agent whether the pod is as it should be.
//!
//! Network configuration keys: `agentSocket` (default [`crate::api::DEFAULT_AGENT_SOCKET`]),
//! `agentTimeoutMs` (default 30000), `excludeNamespaces` (list).

pub mod client;
pub mod conf;
pub mod result;

use std::io::Read;
use std::time::Duration;

use crate::api::{PROTOCOL_VERSION, PluginCommand, PluginRequest, PluginResponse};
use conf::{Command, Env, NetConf};
use result::{LATEST_VERSION, PluginError, code};

/// What a successful run prints on stdout (possibly nothing).
pub type Output = Option<String>;

/// Runs the plugin with the process's environment and stdin; returns the exit code.
pub fn main() -> i32 {
    let var = |k: &str| std::env::var(k).ok();
    if var("CNI_COMMAND").is_none() {
        match std::env::args().nth(1).as_deref() {
            Some("--version" | "-V") => {
                println!("mesh-cni {}", env!("CARGO_PKG_VERSION"));
                return 0;
            }
            Some("--help" | "-h") => {
                println!(
                    "mesh-cni {}\nChained CNI plugin of the ambient mesh. Run by the container \
                     runtime with CNI_COMMAND and the network configuration on stdin.",
                    env!("CARGO_PKG_VERSION")
                );
                return 0;
            }
            _ => {}
        }
    }
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let outcome = match read {
        Ok(_) => run(&var, &stdin),
        Err(e) => Err((
            LATEST_VERSION.to_string(),
            PluginError::new(code::IO_FAILURE, "cannot read stdin", e.to_string()),
        )),
    };
    match outcome {
        Ok(Some(out)) => {
            println!("{out}");
            0
        }
        Ok(None) => 0,
        Err((version, err)) => {
            println!("{}", err.to_json(&version));
            eprintln!("mesh-cni: {err}");
            1
        }
    }
}

/// One plugin invocation. On failure, returns the CNI version to report the error with.
pub fn run(
    var: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Output, (String, PluginError)> {
    let latest = |e| (LATEST_VERSION.to_string(), e);
    let env = Env::read(var).map_err(latest)?;
    if env.command == Command::Version {
        return Ok(Some(result::version_result()));
    }
    let conf = NetConf::parse(stdin).map_err(latest)?;
    let version = conf.cni_version.clone();
    dispatch(&env, &conf).map_err(|e| (version, e))
}

fn dispatch(env: &Env, conf: &NetConf) -> Result<Output, PluginError> {
    match env.command {
        Command::Add => add(env, conf),
        Command::Del => del(env, conf),
        Command::Check => check(env, conf),
        Command::Status => status(conf),
        Command::Gc | Command::Version => Ok(None),
    }
}

fn add(env: &Env, conf: &NetConf) -> Result<Output, PluginError> {
    env.require("CNI_CONTAINERID", &env.container_id)?;
    env.require("CNI_IFNAME", &env.ifname)?;
    if env.netns.is_none() {
        return Err(PluginError::new(
            code::INVALID_ENVIRONMENT,
            "CNI_NETNS is not set",
            "CNI_NETNS is required for ADD",
        ));
    }
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        PluginError::new(
            code::INVALID_CONFIG,
            "missing prevResult",
            "mesh-cni is a chained plugin: list it after the interface plugins of a conflist",
        )
    })?;
    let passthrough = Some(prev.get().to_string());
    let Some(req) = request(env, conf, PluginCommand::Add)? else {
        return Ok(passthrough);
    };
    match ask(conf, &req, conf.agent_timeout())? {
        PluginResponse::Enrolled | PluginResponse::NotEnrolled => Ok(passthrough),
        PluginResponse::Error { message } => Err(PluginError::new(
            code::ENROLMENT_FAILED,
            format!(
                "cannot enrol pod {}/{} in the mesh",
                req.pod_namespace, req.pod_name
            ),
            message,
        )),
    }
}

fn del(env: &Env, conf: &NetConf) -> Result<Output, PluginError> {
    env.require("CNI_CONTAINERID", &env.container_id)?;
    env.require("CNI_IFNAME", &env.ifname)?;
    // Best effort: the pod is going away whatever the agent says, and DEL must be repeatable.
    if let Ok(Some(req)) = request(env, conf, PluginCommand::Del) {
        let timeout = conf.agent_timeout().min(Duration::from_secs(5));
        if let Err(e) = ask(conf, &req, timeout) {
            eprintln!("mesh-cni: DEL not reported to the agent: {e}");
        }
    }
    Ok(None)
}

fn check(env: &Env, conf: &NetConf) -> Result<Output, PluginError> {
    if conf.cni_version.starts_with("0.3.") {
        return Err(PluginError::new(
            code::INCOMPATIBLE_VERSION,
            "CHECK is not defined for this CNI version",
            format!("cniVersion {} predates CHECK (0.4.0)", conf.cni_version),
        ));
    }
    env.require("CNI_CONTAINERID", &env.container_id)?;
    env.require("CNI_IFNAME", &env.ifname)?;
    if conf.prev_result.is_none() {
        return Err(PluginError::new(
            code::INVALID_CONFIG,
            "missing prevResult",
            "CHECK needs the result of the ADD",
        ));
    }
    let Some(req) = request(env, conf, PluginCommand::Check)? else {
        return Ok(None);
    };
    match ask(conf, &req, conf.agent_timeout())? {
        PluginResponse::Enrolled | PluginResponse::NotEnrolled => Ok(None),
        PluginResponse::Error { message } => Err(PluginError::new(
            code::ENROLMENT_FAILED,
            format!(
                "pod {}/{} is not redirected as it should be",
                req.pod_namespace, req.pod_name
            ),
            message,
        )),
    }
}

fn status(conf: &NetConf) -> Result<Output, PluginError> {
    client::reachable(&conf.agent_socket).map_err(|e| {
        PluginError::new(
            code::NOT_AVAILABLE,
            "the mesh node agent is not reachable",
            e.to_string(),
        )
    })?;
    Ok(None)
}

/// The request for the agent, or `None` when the pod is not the agent's business (no
/// Kubernetes pod arguments, or an excluded namespace).
fn request(
    env: &Env,
    conf: &NetConf,
    command: PluginCommand,
) -> Result<Option<PluginRequest>, PluginError> {
    let Some((namespace, name)) = env.args.pod() else {
        return Ok(None);
    };
    if conf.exclude_namespaces.iter().any(|n| n == namespace) {
        return Ok(None);
    }
    Ok(Some(PluginRequest {
        version: PROTOCOL_VERSION,
        command,
        pod_namespace: namespace.to_string(),
        pod_name: name.to_string(),
        pod_uid: env.args.get("K8S_POD_UID").map(str::to_string),
        container_id: env.container_id.clone().unwrap_or_default(),
        netns: env.netns.clone(),
        ifname: env.ifname.clone(),
        ips: conf.prev_ips()?,
    }))
}

fn ask(
    conf: &NetConf,
    req: &PluginRequest,
    timeout: Duration,
) -> Result<PluginResponse, PluginError> {
    client::call(&conf.agent_socket, req, timeout).map_err(|e| {
        PluginError::new(
            code::TRY_AGAIN_LATER,
            "the mesh node agent did not answer",
            format!(
                "{e}; pods of the mesh cannot start until the agent at {} is running",
                conf.agent_socket.display()
            ),
        )
    })
}
