//! Webhook availability with the chart's Deployment (2 replicas, PodDisruptionBudget, probes,
//! `maxUnavailable: 0`), run by `tests/e2e/run` after the running-pod scenarios because it
//! disrupts the webhook:
//! - opted-in pods created in a loop while one webhook pod is deleted and the Deployment is then
//!   rolled: not one creation fails, every created pod is injected;
//! - the Deployment scaled to zero: opted-in pods are refused naming the webhook
//!   (`failurePolicy: Fail`), other pods are still created; then scaled back.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use e2e_tests::{
    Harness, WEBHOOK_NAME, ann,
    node::NodeEnv,
    pods::{self, opted_in, pod},
};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;

const SELECTOR: &str = "app.kubernetes.io/component=webhook";

struct Webhook {
    deployments: Api<Deployment>,
    pods: Api<Pod>,
    name: String,
    selector: String,
}

impl Webhook {
    fn new(h: &Harness, n: &NodeEnv) -> Webhook {
        let ns = &h.env.release_namespace;
        Webhook {
            deployments: Api::namespaced(h.client.clone(), ns),
            pods: Api::namespaced(h.client.clone(), ns),
            name: n.release.clone(),
            selector: format!("{SELECTOR},app.kubernetes.io/instance={}", n.release),
        }
    }

    async fn pod_names(&self) -> Vec<String> {
        self.pods
            .list(&ListParams::default().labels(&self.selector))
            .await
            .expect("listing webhook pods")
            .items
            .iter()
            .map(|p| pods::name(p).to_owned())
            .collect()
    }

    /// Waits until the Deployment has rolled out `replicas` ready, updated replicas and no other
    /// webhook pod exists (old ones fully terminated).
    async fn settled(&self, replicas: i32) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let d = self.deployments.get(&self.name).await.expect("GET deployment");
            let st = d.status.clone().unwrap_or_default();
            let observed = st.observed_generation >= d.metadata.generation;
            let pods = self.pod_names().await.len() as i32;
            if observed
                && st.updated_replicas.unwrap_or(0) == replicas
                && st.ready_replicas.unwrap_or(0) == replicas
                && st.available_replicas.unwrap_or(0) == replicas
                && pods == replicas
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the webhook Deployment did not settle at {replicas} replicas: {st:?}, {pods} pods"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until pod `name` no longer exists (terminated and removed).
    async fn gone(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.pods.get_opt(name).await.expect("GET webhook pod").is_some() {
            assert!(
                Instant::now() < deadline,
                "webhook pod {name} still exists 120 s after its deletion"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn patch(&self, patch: serde_json::Value) {
        self.deployments
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patching the webhook Deployment");
    }
}

#[tokio::test]
#[ignore = "needs the e2e node: run tests/e2e/run"]
async fn webhook_survives_a_deleted_pod_and_a_rollout_and_fails_closed_at_zero() {
    let h = Arc::new(Harness::new().await);
    let n = NodeEnv::from_env();
    let webhook = Webhook::new(&h, &n);
    webhook.settled(2).await;
    // Pods that never schedule (no toleration of the node's taint): only admission matters.
    let ns = h.namespace("avail", &[]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let creator = {
        let (h, ns, stop) = (h.clone(), ns.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut created, mut failed) = (0u32, Vec::new());
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let sent = pod(
                    &format!("avail-{i}"),
                    &opted_in(&[
                        (ann::MODE, "init"),
                        ("ps-injector.io/secret-db", "team-a/db/password"),
                    ]),
                );
                match h.create_pod(&ns, &sent, false).await.result {
                    Ok(p) if pods::status(&p) == Some(ann::STATUS_INJECTED) => created += 1,
                    Ok(p) => failed.push(format!("{}: created but not injected", pods::name(&p))),
                    Err(s) => failed.push(format!("avail-{i}: {} ({})", s.message, s.code)),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (created, failed)
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = webhook.pod_names().await;
    let victim = before.first().expect("a webhook pod").clone();
    webhook
        .pods
        .delete(&victim, &DeleteParams::default())
        .await
        .expect("deleting a webhook pod");
    // Until the victim is gone the Deployment's status and the pod count can still look settled
    // (the ReplicaSet has not reacted yet).
    webhook.gone(&victim).await;
    webhook.settled(2).await;
    // A rollout, as `kubectl rollout restart` does it.
    webhook
        .patch(json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string(),
        }}}}}))
        .await;
    webhook.settled(2).await;
    let after = webhook.pod_names().await;
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "every webhook pod was replaced: {before:?} -> {after:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (created, failed) = creator.await.expect("the creating task");
    assert!(
        failed.is_empty(),
        "{} of {} opted-in creations failed while a webhook pod was deleted and the Deployment rolled: {failed:?}",
        failed.len(),
        created as usize + failed.len()
    );
    assert!(
        created >= 20,
        "only {created} pods were created during the disruption"
    );
    eprintln!(
        "availability: {created} opted-in pods created and injected during a pod deletion and a rollout"
    );

    // Scaled to zero: failurePolicy Fail refuses opted-in pods, naming the webhook; the
    // matchConditions keep every other pod away from it.
    webhook.patch(json!({"spec": {"replicas": 0}})).await;
    webhook.settled(0).await;
    let sent = pod(
        "at-zero",
        &opted_in(&[("ps-injector.io/secret-db", "team-a/db/password")]),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        // The API server's endpoint cache catches up with the emptied Endpoints.
        let created = h.create_pod(&ns, &sent, true).await;
        if let Err(s) = created.result {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "opted-in pods are still admitted with no webhook pod"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        refusal.message.contains(WEBHOOK_NAME),
        "the refusal names the webhook: {}",
        refusal.message
    );
    let refused = h.create_pod(&ns, &sent, false).await.refused();
    assert!(refused.message.contains(WEBHOOK_NAME), "{}", refused.message);
    let plain = pod("plain-at-zero", &[]);
    let p = h.create_pod(&ns, &plain, false).await.pod();
    pods::assert_untouched(&p, &plain);
    let opted_out = pod("opted-out-at-zero", &[(ann::INJECT, "false")]);
    let p = h.create_pod(&ns, &opted_out, false).await.pod();
    pods::assert_untouched(&p, &opted_out);

    webhook.patch(json!({"spec": {"replicas": 2}})).await;
    webhook.settled(2).await;
}
