//! The built-in workload kinds: where each keeps its pod template, and the one rule about
//! `ps-injector.io/` annotations on a workload's own metadata. Shared by `inject`, which warns
//! while it reads manifests, and the warning-only admission entry (`/warn-workloads`), which
//! warns when such a workload is created or updated in the cluster. Pure.

/// A built-in workload kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The path of the pod template inside the object (empty for a Pod).
    pub template_path: &'static [&'static str],
    /// Whether its pods run to completion (Jobs, CronJobs): they never get a classic sidecar.
    pub runs_to_completion: bool,
}

const TEMPLATE: &[&str] = &["spec", "template"];
const JOB_TEMPLATE: &[&str] = &["spec", "jobTemplate", "spec", "template"];

/// The built-in workload of `apiVersion` and `kind`; `None` for anything else (custom
/// resources of the same kind name included).
pub fn workload(api_version: &str, kind: &str) -> Option<Workload> {
    let (template_path, runs_to_completion) = match (api_version, kind) {
        ("v1", "Pod") => (&[][..], false),
        ("v1", "ReplicationController")
        | ("apps/v1", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => (TEMPLATE, false),
        ("batch/v1", "Job") => (TEMPLATE, true),
        ("batch/v1", "CronJob") => (JOB_TEMPLATE, true),
        _ => return None,
    };
    Some(Workload {
        template_path,
        runs_to_completion,
    })
}

/// The handled kinds, for messages and the README.
pub const HANDLED_KINDS: &str = "Pod and ReplicationController (v1), Deployment, StatefulSet, DaemonSet and ReplicaSet \
     (apps/v1), Job and CronJob (batch/v1), and the items of List documents";

/// Keys named in the warning before the rest is counted: Kubernetes may cut a warning after
/// 256 characters.
const NAMED_KEYS: usize = 2;

/// The warning for `ps-injector.io/` annotations on a workload's own metadata, which the
/// webhook never reads (it sees only pods): it names them and the path where they belong.
/// `None` when there are none, or when the object is a Pod (its metadata is the right place).
pub fn misplaced_annotations<'k>(
    workload: &Workload,
    kind: &str,
    keys: impl Iterator<Item = &'k str>,
) -> Option<String> {
    if workload.template_path.is_empty() {
        return None;
    }
    let misplaced: Vec<&str> = keys
        .filter(|k| k.starts_with(inject_api::ANNOTATION_PREFIX))
        .collect();
    if misplaced.is_empty() {
        return None;
    }
    let mut named = misplaced[..misplaced.len().min(NAMED_KEYS)].join(", ");
    if misplaced.len() > NAMED_KEYS {
        named.push_str(&format!(" and {} more", misplaced.len() - NAMED_KEYS));
    }
    let one = misplaced.len() == 1;
    Some(format!(
        "{named} on the {kind}'s own metadata {} ignored: the webhook reads pod annotations; move {} to {}.metadata.annotations",
        if one { "is" } else { "are" },
        if one { "it" } else { "them" },
        workload.template_path.join("."),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_their_templates() {
        assert_eq!(workload("v1", "Pod").unwrap().template_path, &[] as &[&str]);
        assert_eq!(workload("apps/v1", "Deployment").unwrap().template_path, TEMPLATE);
        assert!(workload("batch/v1", "Job").unwrap().runs_to_completion);
        assert_eq!(
            workload("batch/v1", "CronJob").unwrap().template_path,
            JOB_TEMPLATE
        );
        assert_eq!(workload("example.com/v1", "Deployment"), None);
        assert_eq!(workload("apps/v1beta1", "Deployment"), None);
    }

    #[test]
    fn the_warning_names_the_keys_and_where_they_belong() {
        let deployment = workload("apps/v1", "Deployment").unwrap();
        let cronjob = workload("batch/v1", "CronJob").unwrap();
        let pod = workload("v1", "Pod").unwrap();
        let w =
            |wl: &Workload, kind: &str, keys: &[&str]| misplaced_annotations(wl, kind, keys.iter().copied());
        assert_eq!(
            w(
                &deployment,
                "Deployment",
                &["ps-injector.io/inject", "app.kubernetes.io/name"]
            )
            .unwrap(),
            "ps-injector.io/inject on the Deployment's own metadata is ignored: the webhook reads pod \
             annotations; move it to spec.template.metadata.annotations"
        );
        assert_eq!(
            w(
                &cronjob,
                "CronJob",
                &["ps-injector.io/inject", "ps-injector.io/secret-db"]
            )
            .unwrap(),
            "ps-injector.io/inject, ps-injector.io/secret-db on the CronJob's own metadata are ignored: the \
             webhook reads pod annotations; move them to spec.jobTemplate.spec.template.metadata.annotations"
        );
        let many: Vec<String> = (0..40).map(|i| format!("ps-injector.io/secret-db{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let long = w(&deployment, "StatefulSet", &many).unwrap();
        assert!(
            long.starts_with("ps-injector.io/secret-db0, ps-injector.io/secret-db1 and 38 more on"),
            "{long}"
        );
        assert!(long.len() <= 256, "{} characters: {long}", long.len());
        assert_eq!(w(&deployment, "Deployment", &["app", "example.com/inject"]), None);
        assert_eq!(w(&pod, "Pod", &["ps-injector.io/inject"]), None);
    }
}
