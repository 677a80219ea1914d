//! Least-privilege RBAC of the operator, and the `rsigma-debug` role users
//! bind for `rsigma engine status` / `rsigma engine tap` through
//! port-forwards.
//!
//! The operator gets no access to Secrets at all: engine pods mount the
//! Secrets an engine references (TLS, NATS credentials) themselves, and the
//! operator only writes their names into the pod template.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::ServiceAccount,
        rbac::v1::{
            ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
        },
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use crate::GROUP;

/// Name of the operator's ClusterRole (and of its ServiceAccount).
pub const OPERATOR_ROLE: &str = "rsigma-operator";
/// Name of the operator's leader-election Role (its own namespace).
pub const LEADER_ELECTION_ROLE: &str = "rsigma-operator-leader-election";
/// Name of the ClusterRole users bind for status and tap via port-forward.
pub const DEBUG_ROLE: &str = "rsigma-debug";
/// Namespace of the operator in the static manifests (`crds/rbac.yaml`).
pub const DEFAULT_NAMESPACE: &str = "rsigma-system";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |v: &[&str]| Some(v.iter().map(|s| (*s).to_owned()).collect());
    PolicyRule {
        api_groups: strings(groups),
        resources: strings(resources),
        verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

const READ: &[&str] = &["get", "list", "watch"];
/// Objects the operator applies (server-side apply: `patch`, plus `create`
/// when the object is new), watches as their owner and reads first; `delete`
/// because OwnerReferencesPermissionEnforcement (on in OpenShift) lets only
/// who may delete an object set its `ownerReferences`.
const APPLY_WATCHED: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

/// What the operator needs in every namespace it watches, and no more: each
/// verb is one it calls. All of it is namespaced, so the same rules serve a
/// ClusterRole (every namespace) or one Role per watched namespace.
pub fn operator_rules() -> Vec<PolicyRule> {
    vec![
        rule(&[GROUP], &["sigmarulesets", "detectionengines"], READ),
        rule(
            &[GROUP],
            &["sigmarulesets/status", "detectionengines/status"],
            &["patch"],
        ),
        // ownerReferences with blockOwnerDeletion need update on the
        // owner's finalizers (OwnerReferencesPermissionEnforcement).
        rule(&[GROUP], &["detectionengines/finalizers"], &["update"]),
        rule(&[""], &["configmaps", "services"], APPLY_WATCHED),
        rule(&["apps"], &["deployments"], APPLY_WATCHED),
        // Deleted when no longer desired (a user-provided account named, persistence or the budget switched off).
        rule(
            &[""],
            &["serviceaccounts"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        rule(
            &[""],
            &["persistentvolumeclaims"],
            &["get", "create", "patch", "delete"],
        ),
        rule(
            &["policy"],
            &["poddisruptionbudgets"],
            &["get", "create", "patch", "delete"],
        ),
        rule(&[""], &["pods"], &["list", "watch"]),
        rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
    ]
}

/// Leader election: Leases in the operator's own namespace.
pub fn leader_election_rules() -> Vec<PolicyRule> {
    vec![rule(
        &["coordination.k8s.io"],
        &["leases"],
        &["get", "create", "update", "patch"],
    )]
}

/// `rsigma-debug`: exactly what `rsigma engine status|tap` and `rsigma config
/// reload` need for a `k8s://` address: read the engine, find a ready pod
/// (also behind a Service) and port-forward to it. Bind it per namespace with
/// a RoleBinding.
pub fn debug_rules() -> Vec<PolicyRule> {
    vec![
        rule(&[GROUP], &["detectionengines"], &["get"]),
        rule(&[""], &["pods"], &["get", "list"]),
        rule(&[""], &["services"], &["get"]),
        // A WebSocket port-forward (kube-rs, kubectl 1.30+) is a GET, which
        // servers before 1.31 authorize as `get`, later ones as `create`;
        // SPDY (older kubectl) is a POST: `create`.
        rule(&[""], &["pods/portforward"], &["get", "create"]),
    ]
}

/// Read access to the custom resources, aggregated into the built-in `view`
/// (and so `edit` and `admin`) ClusterRoles when the chart enables it.
pub fn view_rules() -> Vec<PolicyRule> {
    vec![rule(&[GROUP], &["sigmarulesets", "detectionengines"], READ)]
}

/// Write access to the custom resources (not their status), aggregated into
/// the built-in `edit` and `admin` ClusterRoles when the chart enables it.
pub fn edit_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &[GROUP],
            &["sigmarulesets", "detectionengines"],
            &["create", "update", "patch", "delete", "deletecollection"],
        ),
        rule(
            &[GROUP],
            &["detectionengines/scale"],
            &["get", "update", "patch"],
        ),
    ]
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(BTreeMap::from([
            (
                "app.kubernetes.io/name".to_owned(),
                "rsigma-operator".to_owned(),
            ),
            ("app.kubernetes.io/part-of".to_owned(), "rsigma".to_owned()),
        ])),
        ..Default::default()
    }
}

fn subject(namespace: &str) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".to_owned(),
        name: OPERATOR_ROLE.to_owned(),
        namespace: Some(namespace.to_owned()),
        ..Default::default()
    }]
}

/// Cluster-wide RBAC objects of the operator running as ServiceAccount
/// `rsigma-operator` in `namespace`, plus the `rsigma-debug` ClusterRole.
pub struct Manifests {
    /// The operator's ServiceAccount.
    pub service_account: ServiceAccount,
    /// The operator's ClusterRole.
    pub operator_role: ClusterRole,
    /// Binds the operator's ClusterRole to its ServiceAccount.
    pub operator_binding: ClusterRoleBinding,
    /// Leader election Role in the operator's namespace.
    pub leader_election_role: Role,
    /// Binds the leader election Role.
    pub leader_election_binding: RoleBinding,
    /// The debug ClusterRole (not bound: users bind it).
    pub debug_role: ClusterRole,
}

/// The RBAC manifests for an operator watching every namespace.
pub fn manifests(namespace: &str) -> Manifests {
    Manifests {
        service_account: ServiceAccount {
            metadata: meta(OPERATOR_ROLE, Some(namespace)),
            ..Default::default()
        },
        operator_role: ClusterRole {
            metadata: meta(OPERATOR_ROLE, None),
            rules: Some(operator_rules()),
            ..Default::default()
        },
        operator_binding: ClusterRoleBinding {
            metadata: meta(OPERATOR_ROLE, None),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".to_owned()),
                kind: "ClusterRole".to_owned(),
                name: OPERATOR_ROLE.to_owned(),
            },
            subjects: Some(subject(namespace)),
        },
        leader_election_role: Role {
            metadata: meta(LEADER_ELECTION_ROLE, Some(namespace)),
            rules: Some(leader_election_rules()),
        },
        leader_election_binding: RoleBinding {
            metadata: meta(LEADER_ELECTION_ROLE, Some(namespace)),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".to_owned()),
                kind: "Role".to_owned(),
                name: LEADER_ELECTION_ROLE.to_owned(),
            },
            subjects: Some(subject(namespace)),
        },
        debug_role: ClusterRole {
            metadata: meta(DEBUG_ROLE, None),
            rules: Some(debug_rules()),
            ..Default::default()
        },
    }
}
