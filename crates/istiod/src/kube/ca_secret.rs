//! The self-signed root shared by every istiod replica through a Secret (`istio-ca-secret` in
//! istiod's namespace, keys `ca-cert.pem` and `ca-key.pem`, as Istio names them).
//!
//! At start-up, before the CA is loaded from the CA directory:
//! - the Secret exists: its root is written into the directory (replacing what is there);
//! - it does not: the directory's root (created now if absent) is stored as the Secret; when
//!   another replica stores its own first (create conflict), that one is taken instead.
//!
//! A plugged-in CA (files mounted into the CA directory) is used by disabling the Secret
//! (`--ca-secret=""`).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use identity::CertificateAuthority;
use identity::ca::{ROOT_CERT_FILE, ROOT_KEY_FILE};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{Api, PostParams};

/// Keys of the Secret.
pub const CERT_KEY: &str = "ca-cert.pem";
pub const KEY_KEY: &str = "ca-key.pem";
/// Type of the Secret.
const SECRET_TYPE: &str = "istio.io/ca-root";

#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    #[error("CA Secret {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("CA Secret {namespace}/{name} lacks {key}")]
    Incomplete {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the root CA in {dir}: {source}")]
    Create {
        dir: PathBuf,
        source: identity::CaError,
    },
}

/// The root certificate and key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct RootFiles {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for RootFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootFiles").finish_non_exhaustive()
    }
}

/// The Secret storing `root`.
pub fn root_secret(namespace: &str, name: &str, root: &RootFiles) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.to_string()),
        data: Some(BTreeMap::from([
            (CERT_KEY.to_string(), ByteString(root.cert_pem.clone())),
            (KEY_KEY.to_string(), ByteString(root.key_pem.clone())),
        ])),
        ..Default::default()
    }
}

/// The root a Secret holds.
pub fn root_of(secret: &Secret, namespace: &str, name: &str) -> Result<RootFiles, CaSecretError> {
    let get = |key: &'static str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .filter(|v| !v.0.is_empty())
            .map(|v| v.0.clone())
            .ok_or(CaSecretError::Incomplete {
                namespace: namespace.to_string(),
                name: name.to_string(),
                key,
            })
    };
    Ok(RootFiles {
        cert_pem: get(CERT_KEY)?,
        key_pem: get(KEY_KEY)?,
    })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaSecretError + '_ {
    move |source| CaSecretError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_root(dir: &Path) -> Result<RootFiles, CaSecretError> {
    let cert = dir.join(ROOT_CERT_FILE);
    let key = dir.join(ROOT_KEY_FILE);
    Ok(RootFiles {
        cert_pem: std::fs::read(&cert).map_err(io(&cert))?,
        key_pem: std::fs::read(&key).map_err(io(&key))?,
    })
}

/// Writes `root` into `dir` (the key readable by its owner only), each file replaced whole.
pub fn write_root(dir: &Path, root: &RootFiles) -> Result<(), CaSecretError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for (file, content) in [
        (ROOT_KEY_FILE, &root.key_pem),
        (ROOT_CERT_FILE, &root.cert_pem),
    ] {
        let path = dir.join(file);
        let tmp = dir.join(format!(".{file}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(content).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    Ok(())
}

/// Makes `ca_dir` hold the root of the Secret `namespace/name`, creating both if needed; a
/// Secret created here is owned by `owner`.
pub async fn sync_root(
    client: &Client,
    namespace: &str,
    name: &str,
    ca_dir: &Path,
    trust_domain: &str,
    owner: Option<&OwnerReference>,
) -> Result<(), CaSecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let api_err = |source| CaSecretError::Api {
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    };
    if let Some(secret) = api.get_opt(name).await.map_err(api_err)? {
        let root = root_of(&secret, namespace, name)?;
        if read_root(ca_dir).ok().as_ref() != Some(&root) {
            write_root(ca_dir, &root)?;
        }
        tracing::info!(secret = %format!("{namespace}/{name}"), "using the root CA of the Secret");
        return Ok(());
    }
    // No Secret yet: store this directory's root (created if absent).
    CertificateAuthority::load_or_create(ca_dir, trust_domain).map_err(|source| {
        CaSecretError::Create {
            dir: ca_dir.to_path_buf(),
            source,
        }
    })?;
    let root = read_root(ca_dir)?;
    let mut secret = root_secret(namespace, name, &root);
    crate::kube::owner::set_owner(&mut secret.metadata, owner);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), "stored the root CA in a new Secret");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Another replica stored its root first: use that one.
            let secret = api.get(name).await.map_err(api_err)?;
            write_root(ca_dir, &root_of(&secret, namespace, name)?)?;
            tracing::info!(secret = %format!("{namespace}/{name}"), "using the root CA another replica stored");
            Ok(())
        }
        Err(e) => Err(api_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_round_trip_through_the_secret_and_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").expect("ca");
        let root = read_root(dir.path()).expect("files");
        let secret = root_secret("istio-system", "istio-ca-secret", &root);
        let json = serde_json::to_value(&secret).expect("serializable");
        assert_eq!(json["type"], "istio.io/ca-root");
        assert!(json["data"]["ca-cert.pem"].is_string());
        let back = root_of(&secret, "istio-system", "istio-ca-secret").expect("complete");
        assert_eq!(back, root);

        let other = tempfile::tempdir().expect("tempdir");
        write_root(&other.path().join("ca"), &back).expect("written");
        let loaded =
            CertificateAuthority::load_or_create(&other.path().join("ca"), "cluster.local")
                .expect("loads the same root");
        assert_eq!(loaded.root_pem(), ca.root_pem());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(other.path().join("ca").join(ROOT_KEY_FILE))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_incomplete_secret_is_refused() {
        let mut secret = root_secret(
            "istio-system",
            "istio-ca-secret",
            &RootFiles {
                cert_pem: b"cert".to_vec(),
                key_pem: Vec::new(),
            },
        );
        let err = root_of(&secret, "istio-system", "istio-ca-secret").expect_err("no key");
        assert_eq!(
            err.to_string(),
            "CA Secret istio-system/istio-ca-secret lacks ca-key.pem"
        );
        secret.data = None;
        assert!(root_of(&secret, "istio-system", "istio-ca-secret").is_err());
    }
}
