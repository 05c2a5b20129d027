//! Running a command in a pod's container through the API server (`pods/exec`), as
//! `kubectl exec` does, with its output and exit code.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Client;
use kube::api::{Api, AttachParams};
use tokio::io::AsyncReadExt;

use super::K8sError;

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    /// The exit code (0 on success), if the API server reported one.
    pub exit_code: Option<i32>,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// stdout and stderr, for messages.
    pub fn combined(&self) -> String {
        let mut s = self.stdout.trim_end().to_string();
        let err = self.stderr.trim_end();
        if !err.is_empty() {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(err);
        }
        s
    }
}

/// Runs `command` in `namespace/pod` (first container) and waits up to `timeout` for it to end.
pub async fn exec(
    client: &Client,
    namespace: &str,
    pod: &str,
    command: &[&str],
    timeout: Duration,
) -> Result<ExecOutput, K8sError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let err = |reason: String| K8sError::Exec {
        pod: format!("{namespace}/{pod}"),
        command: command.join(" "),
        reason,
    };
    let work = async {
        let params = AttachParams::default()
            .stdin(false)
            .stdout(true)
            .stderr(true);
        let mut proc = api
            .exec(pod, command.iter().copied(), &params)
            .await
            .map_err(|e| err(e.to_string()))?;
        let status = proc.take_status();
        let mut out = proc
            .stdout()
            .ok_or_else(|| err("no stdout stream".into()))?;
        let mut errs = proc
            .stderr()
            .ok_or_else(|| err("no stderr stream".into()))?;
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let (ro, re) = tokio::join!(out.read_to_end(&mut o), errs.read_to_end(&mut e));
        ro.map_err(|x| err(format!("reading stdout: {x}")))?;
        re.map_err(|x| err(format!("reading stderr: {x}")))?;
        let status = match status {
            Some(s) => s.await,
            None => None,
        };
        let _ = proc.join().await;
        Ok::<_, K8sError>(ExecOutput {
            stdout: String::from_utf8_lossy(&o).into_owned(),
            stderr: String::from_utf8_lossy(&e).into_owned(),
            exit_code: status.as_ref().and_then(exit_code),
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| err(format!("no end within {timeout:?}")))?
}

/// The exit code in the `Status` the API server sends at the end of an exec: `Success`, or a
/// `Failure` whose `NonZeroExitCode` details carry an `ExitCode` cause.
fn exit_code(status: &Status) -> Option<i32> {
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    status
        .details
        .as_ref()?
        .causes
        .as_ref()?
        .iter()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.as_deref()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    fn failure(reason: &str, causes: Option<Vec<StatusCause>>) -> Status {
        Status {
            status: Some("Failure".into()),
            reason: Some(reason.into()),
            details: Some(StatusDetails {
                causes,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn reads_the_exit_code_of_a_failure() {
        let ok = Status {
            status: Some("Success".into()),
            ..Default::default()
        };
        assert_eq!(exit_code(&ok), Some(0));
        let cause = StatusCause {
            reason: Some("ExitCode".into()),
            message: Some("22".into()),
            field: None,
        };
        assert_eq!(
            exit_code(&failure("NonZeroExitCode", Some(vec![cause]))),
            Some(22)
        );
        assert_eq!(exit_code(&failure("InternalError", None)), None);
    }
}
