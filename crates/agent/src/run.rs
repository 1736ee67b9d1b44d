//! `fetch` and `watch`: sign in, fetch every reference concurrently over one session, assemble,
//! commit, report (one summary line, the result file, the ready file), sign out.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use inject_api::layout;
use passwordsafe::{Client, Error as PsError, Session};

use crate::{
    AgentError,
    config::Settings,
    generation::{Assembled, Outcome, OutputError, OutputKind, Plan, Results, assemble},
    notify,
    writer::{Committed, Root},
};

/// How long a cycle in progress may still run after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Fetch,
    Watch,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Fetch => "fetch",
            Mode::Watch => "watch",
        }
    }
}

struct Agent {
    settings: Settings,
    plan: Plan,
    root: Root,
    client: Client,
    started: Instant,
}

/// What one fetch-and-write cycle did.
struct Report {
    outcomes: Vec<Outcome>,
    /// A failure not tied to one output (sign-in, the root, ...).
    run_error: Option<String>,
    committed: Option<Committed>,
    /// Content equal to the generation in place: nothing written.
    unchanged: bool,
    /// Some reference failed authentication: the session should be replaced.
    auth_failed: bool,
    sign_in: Duration,
    fetch: Duration,
    write: Duration,
}

impl Report {
    fn ok(&self) -> bool {
        self.run_error.is_none() && self.outcomes.iter().all(|o| o.optional || o.error.is_none())
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, AgentError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AgentError::Failed(format!("cannot start the runtime: {e}")))
}

impl Agent {
    fn new(settings: Settings) -> Result<Agent, AgentError> {
        let started = Instant::now();
        let plan = Plan::new(&settings.config);
        let client = Client::new(settings.client.clone()).map_err(|e| match e {
            PsError::InvalidInput { .. } => {
                AgentError::Config(crate::config::ConfigError(format!("Password Safe client: {e}")))
            }
            e => AgentError::Failed(format!("Password Safe client: {e}")),
        })?;
        let root =
            Root::open(&settings.config.root).map_err(|e| AgentError::Failed(format!("output root: {e}")))?;
        Ok(Agent {
            settings,
            plan,
            root,
            client,
            started,
        })
    }

    async fn fetch_all(&self, session: &Session) -> (Results, bool) {
        let p = &self.plan;
        let secrets = join_all(p.secrets.iter().map(|s| session.secret(s)));
        let folders = join_all(p.folders.iter().map(|f| session.folder(f)));
        // Requests stay open until the files are written (one round trip less before them):
        // `fetch` checks them in at sign-out, `watch` right after each report.
        let accounts = join_all(p.accounts.iter().map(|a| session.managed_account_open(a)));
        let (s, f, a) = tokio::join!(secrets, folders, accounts);
        let mut auth_failed = false;
        let mut keep = |e: PsError| {
            auth_failed |= matches!(e, PsError::Authentication { .. } | PsError::SignedOut { .. });
            Arc::new(e)
        };
        let results = Results {
            secrets: s.into_iter().map(|r| r.map_err(&mut keep)).collect(),
            folders: f.into_iter().map(|r| r.map_err(&mut keep)).collect(),
            accounts: a.into_iter().map(|r| r.map_err(&mut keep)).collect(),
        };
        (results, auth_failed)
    }

    /// Assembles and commits, retrying without an optional output whose write failed.
    fn write(
        &self,
        results: &Results,
        last: &mut Option<[u8; 32]>,
    ) -> (Assembled, Option<String>, Option<Committed>, bool) {
        let mut skip: BTreeMap<usize, OutputError> = BTreeMap::new();
        loop {
            let mut a = assemble(&self.plan, results, &self.settings.templates, &skip);
            if !a.ok {
                return (a, None, None, false);
            }
            let digest = a.tree.digest();
            if *last == Some(digest) && self.root.current().is_some() {
                return (a, None, None, true);
            }
            match self.root.commit(&a.tree) {
                Ok(c) => {
                    *last = Some(digest);
                    return (a, None, Some(c), false);
                }
                Err(e) => {
                    let error = OutputError::Write(e.to_string());
                    match e.output {
                        Some(i) if !e.switched && self.plan.outputs[i].optional && !skip.contains_key(&i) => {
                            skip.insert(i, error);
                        }
                        Some(i) if !e.switched => {
                            a.outcomes[i].error = Some(error);
                            a.ok = false;
                            return (a, None, None, false);
                        }
                        _ => return (a, Some(e.to_string()), None, false),
                    }
                }
            }
        }
    }

    /// One cycle. `session` is signed in if needed and kept (watch) or left for the caller.
    async fn cycle(&self, session: &mut Option<Session>, last: &mut Option<[u8; 32]>) -> Report {
        let t0 = Instant::now();
        let mut report = Report {
            outcomes: vec![],
            run_error: None,
            committed: None,
            unchanged: false,
            auth_failed: false,
            sign_in: Duration::ZERO,
            fetch: Duration::ZERO,
            write: Duration::ZERO,
        };
        if session.is_none() {
            match self.client.sign_in().await {
                Ok(s) => *session = Some(s),
                Err(e) => {
                    report.sign_in = t0.elapsed();
                    let msg: Arc<str> = format!("sign-in to Password Safe failed: {e}").into();
                    report.outcomes = self.all_failed(&msg);
                    report.run_error = Some(msg.to_string());
                    return report;
                }
            }
        }
        report.sign_in = t0.elapsed();
        let Some(s) = session.as_ref() else { return report };
        let t1 = Instant::now();
        let (results, auth_failed) = self.fetch_all(s).await;
        report.fetch = t1.elapsed();
        report.auth_failed = auth_failed;
        let t2 = Instant::now();
        let (a, run_error, committed, unchanged) = self.write(&results, last);
        drop(results);
        report.write = t2.elapsed();
        report.outcomes = a.outcomes;
        report.run_error = run_error;
        report.committed = committed;
        report.unchanged = unchanged;
        report
    }

    fn all_failed(&self, msg: &Arc<str>) -> Vec<Outcome> {
        self.plan
            .outputs
            .iter()
            .enumerate()
            .map(|(index, o)| Outcome {
                index,
                optional: o.optional,
                error: Some(OutputError::NotFetched(msg.clone())),
            })
            .collect()
    }

    /// Logs the failures and the summary line; writes the result file (and the ready file).
    fn report(&self, mode: Mode, r: &Report, ready: bool) {
        for o in &r.outcomes {
            let Some(err) = &o.error else { continue };
            // A fetch error starts with its reference, which is how a BeyondTrust list entry is
            // labelled already.
            let line = match (err, &self.plan.outputs[o.index].kind) {
                (OutputError::Fetch(_), OutputKind::BeyondTrust { .. }) => err.to_string(),
                _ => format!("{}: {err}", self.plan.label(o.index)),
            };
            if o.optional {
                tracing::warn!("optional {line} (skipped)");
            } else if !matches!(err, OutputError::NotFetched(_)) {
                // (The run's own error is logged once, below.)
                tracing::error!("{line}");
            }
        }
        if let Some(e) = &r.run_error {
            tracing::error!("{e}");
        }
        let failed = r
            .outcomes
            .iter()
            .filter(|o| o.error.is_some() && !o.optional)
            .count();
        let skipped = r
            .outcomes
            .iter()
            .filter(|o| o.error.is_some() && o.optional)
            .count();
        let written = r.outcomes.len() - failed - skipped;
        let files = r.committed.as_ref().map_or(0, |c| c.files);
        let generation = r
            .committed
            .as_ref()
            .map(|c| c.generation.clone())
            .or_else(|| self.root.current());
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
        let ok = r.ok();
        let errors: Vec<String> = r
            .outcomes
            .iter()
            .filter(|o| o.error.is_some() && !o.optional)
            .map(|o| self.plan.label(o.index))
            .collect();
        let msg = match (mode, ok, r.unchanged) {
            (Mode::Fetch, true, _) => "fetch complete",
            (Mode::Fetch, false, _) => "fetch FAILED: nothing was switched in",
            (Mode::Watch, true, true) => "refresh: unchanged",
            (Mode::Watch, true, false) => "refresh: new generation",
            (Mode::Watch, false, _) => "refresh FAILED: keeping the last good generation",
        };
        let json_errors = serde_json::to_string(&errors).unwrap_or_default();
        tracing::info!(
            mode = mode.as_str(),
            ok,
            references = self.plan.reference_count(),
            outputs = r.outcomes.len(),
            written,
            failed,
            skipped,
            files,
            changed = r.committed.is_some(),
            generation = generation.as_deref().unwrap_or(""),
            sign_in_ms = ms(r.sign_in),
            fetch_ms = ms(r.fetch),
            write_ms = ms(r.write),
            total_ms = ms(self.started.elapsed()),
            json_errors = %json_errors,
            "{msg}"
        );
        let outputs: Vec<serde_json::Value> = r
            .outcomes
            .iter()
            .map(|o| {
                let out = &self.plan.outputs[o.index];
                let (kind, reference) = self.plan.reference(out.reference);
                serde_json::json!({
                    "name": self.plan.output_name(o.index),
                    "kind": kind,
                    "reference": reference,
                    "optional": o.optional,
                    "ok": o.error.is_none(),
                    "error": o.error.as_ref().map(ToString::to_string),
                })
            })
            .collect();
        let result = serde_json::json!({
            "version": 1,
            "mode": mode.as_str(),
            "ok": ok,
            "time": crate::log::timestamp_now(),
            "generation": generation,
            "changed": r.committed.is_some(),
            "error": r.run_error,
            "outputs": outputs,
        });
        let mut bytes = serde_json::to_vec_pretty(&result).unwrap_or_default();
        bytes.push(b'\n');
        if let Err(e) = self.root.write_meta(layout::RESULT_FILE, &bytes) {
            tracing::warn!("cannot write the result file: {e}");
        }
        if ready
            && let Some(g) = generation
            && let Err(e) = self
                .root
                .write_meta(layout::READY_FILE, format!("{g}\n").as_bytes())
        {
            tracing::warn!("cannot write the ready file: {e}");
        }
    }

    fn failure_text(&self, r: &Report) -> String {
        let n = r
            .outcomes
            .iter()
            .filter(|o| o.error.is_some() && !o.optional)
            .count();
        match &r.run_error {
            Some(e) => e.clone(),
            None => format!("{n} required output(s) failed"),
        }
    }
}

/// `ps-agent fetch`.
pub fn fetch(settings: Settings) -> Result<(), AgentError> {
    let agent = Agent::new(settings)?;
    runtime()?.block_on(async {
        let mut session = None;
        let mut last = None;
        let report = agent.cycle(&mut session, &mut last).await;
        if let Some(s) = session.take()
            && let Err(e) = s.sign_out().await
        {
            tracing::warn!("sign-out from Password Safe failed: {e}");
        }
        let ok = report.ok();
        agent.report(Mode::Fetch, &report, ok);
        if ok {
            Ok(())
        } else {
            Err(AgentError::Reported(agent.failure_text(&report)))
        }
    })
}

fn jittered(interval: Duration, percent: u8) -> Duration {
    let j = f64::from(percent.min(100)) / 100.0;
    let factor = 1.0 + (fastrand::f64() * 2.0 - 1.0) * j;
    interval.mul_f64(factor).max(Duration::from_secs(1))
}

fn backoff(failures: u32, interval: Duration) -> Duration {
    let cap = interval.min(Duration::from_secs(300)).max(Duration::from_secs(1));
    let base = Duration::from_secs(1u64 << failures.saturating_sub(1).min(16)).min(cap);
    (base / 2 + base.mul_f64(fastrand::f64() / 2.0)).max(Duration::from_millis(500))
}

/// `ps-agent watch`.
pub fn watch(settings: Settings) -> Result<(), AgentError> {
    let agent = Agent::new(settings)?;
    runtime()?.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| AgentError::Failed(format!("cannot handle SIGTERM: {e}")))?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| AgentError::Failed(format!("cannot handle SIGINT: {e}")))?;
        let ready = Arc::new(AtomicBool::new(false));
        if let Some(port) = agent.settings.config.readiness.http_port {
            // Bound before the first fetch: a port that cannot be had fails the start, rather
            // than leaving a probe that can never succeed.
            let listener = notify::readiness_listener(port).map_err(|e| {
                AgentError::Failed(format!(
                    "readiness.httpPort {port}: cannot listen on 0.0.0.0:{port}: {e}; choose a free port"
                ))
            })?;
            let ready = ready.clone();
            tokio::spawn(async move {
                if let Err(e) = notify::serve_readiness(listener, ready).await {
                    tracing::error!("readiness endpoint on port {port}: {e}");
                }
            });
        }
        let interval = Duration::from_secs(agent.settings.config.refresh.interval_seconds);
        let jitter = agent.settings.config.refresh.jitter_percent;
        let mut session: Option<Session> = None;
        let mut last = None;
        let mut failures = 0u32;
        loop {
            let (report, stopping) = {
                let cycle = agent.cycle(&mut session, &mut last);
                tokio::pin!(cycle);
                tokio::select! {
                    r = &mut cycle => (Some(r), false),
                    _ = term.recv() => (tokio::time::timeout(SHUTDOWN_GRACE, &mut cycle).await.ok(), true),
                    _ = int.recv() => (tokio::time::timeout(SHUTDOWN_GRACE, &mut cycle).await.ok(), true),
                }
            };
            if let Some(report) = &report {
                let ok = report.ok();
                if ok {
                    ready.store(true, Ordering::SeqCst);
                    failures = 0;
                } else {
                    failures += 1;
                }
                agent.report(Mode::Watch, report, ok);
                if let (Some(c), Some(sig)) = (&report.committed, &agent.settings.config.signal)
                    && c.replaced
                {
                    match notify::notify(sig, &agent.root, &c.generation).await {
                        Ok(m) => tracing::info!("notified the app: {m}"),
                        Err(m) => tracing::warn!("could not notify the app: {m}"),
                    }
                }
                if report.auth_failed
                    && let Some(s) = session.take()
                {
                    let _ = s.sign_out().await;
                } else if let Some(s) = &session {
                    // A failure is logged there; sign-out tries again.
                    let _ = s.check_in_open_requests().await;
                }
            }
            if stopping {
                break;
            }
            let wait = if failures == 0 {
                jittered(interval, jitter)
            } else {
                backoff(failures, interval)
            };
            tracing::debug!(wait_ms = wait.as_millis() as u64, "next refresh");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        if let Some(s) = session.take()
            && let Err(e) = s.sign_out().await
        {
            tracing::warn!("sign-out from Password Safe failed: {e}");
        }
        tracing::info!(mode = "watch", "stopped: signed out, exiting");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_and_backoff_bounds() {
        for _ in 0..200 {
            let j = jittered(Duration::from_secs(100), 10);
            assert!(
                j >= Duration::from_secs(90) && j <= Duration::from_secs(110),
                "{j:?}"
            );
            assert!(jittered(Duration::from_secs(1), 100) >= Duration::from_secs(1));
            let b = backoff(1, Duration::from_secs(300));
            assert!(
                b >= Duration::from_millis(500) && b <= Duration::from_secs(1),
                "{b:?}"
            );
            let b = backoff(30, Duration::from_secs(60));
            assert!(
                b >= Duration::from_secs(30) && b <= Duration::from_secs(60),
                "{b:?}"
            );
        }
    }
}
