//! The owner of what istiod creates at run time. Objects istiod makes outside any chart
//! (the root certificate ConfigMap in every namespace, the CA Secret, the leader Lease) carry
//! an owner reference to a cluster-scoped object of the installation, the ClusterRole named by
//! `--owner-cluster-role`; when the installation is removed, the garbage collector removes
//! them too. The reference does not block the owner's deletion.

use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::Api;
use kube::{Client, Resource, ResourceExt};

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("cannot read the owner ClusterRole {name}: {source}")]
    Read { name: String, source: kube::Error },
    #[error(
        "the owner ClusterRole {name} does not exist (--owner-cluster-role names a ClusterRole of \
         the installation)"
    )]
    Missing { name: String },
}

/// Reads the ClusterRole `name` and returns a reference to it.
pub async fn cluster_role_owner(client: &Client, name: &str) -> Result<OwnerReference, OwnerError> {
    let role = Api::<ClusterRole>::all(client.clone())
        .get_opt(name)
        .await
        .map_err(|source| OwnerError::Read {
            name: name.to_string(),
            source,
        })?
        .ok_or_else(|| OwnerError::Missing {
            name: name.to_string(),
        })?;
    Ok(reference_to(&role))
}

/// A non-controlling, non-blocking reference to `role`.
pub fn reference_to(role: &ClusterRole) -> OwnerReference {
    OwnerReference {
        api_version: ClusterRole::api_version(&()).into_owned(),
        kind: ClusterRole::kind(&()).into_owned(),
        name: role.name_any(),
        uid: role.uid().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// Adds `owner` (when there is one) to `meta`'s owner references.
pub fn set_owner(meta: &mut ObjectMeta, owner: Option<&OwnerReference>) {
    if let Some(owner) = owner {
        let refs = meta.owner_references.get_or_insert_with(Vec::new);
        if !refs.iter().any(|r| r.uid == owner.uid) {
            refs.push(owner.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(uid: &str) -> ClusterRole {
        ClusterRole {
            metadata: ObjectMeta {
                name: Some("istiod-istio-system".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_reference_names_the_cluster_role_and_does_not_block_its_deletion() {
        let r = reference_to(&role("0b3c"));
        assert_eq!(r.api_version, "rbac.authorization.k8s.io/v1");
        assert_eq!(r.kind, "ClusterRole");
        assert_eq!(r.name, "istiod-istio-system");
        assert_eq!(r.uid, "0b3c");
        assert_eq!(r.block_owner_deletion, None);
        assert_eq!(r.controller, None);
    }

    #[test]
    fn the_owner_is_added_once_and_other_owners_are_kept() {
        let mut meta = ObjectMeta {
            owner_references: Some(vec![reference_to(&role("other"))]),
            ..Default::default()
        };
        let owner = reference_to(&role("0b3c"));
        set_owner(&mut meta, Some(&owner));
        set_owner(&mut meta, Some(&owner));
        let uids: Vec<_> = meta
            .owner_references
            .unwrap()
            .into_iter()
            .map(|r| r.uid)
            .collect();
        assert_eq!(uids, ["other", "0b3c"]);
        let mut none = ObjectMeta::default();
        set_owner(&mut none, None);
        assert_eq!(none.owner_references, None);
    }
}
