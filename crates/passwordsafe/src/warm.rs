//! Connection warm-up: extra connections opened while the session signs in, handed to the
//! session's HTTP client when the calls that follow need connections of their own.
//!
//! HTTP/1.1 carries one call per connection at a time, so N concurrent calls right after sign-in
//! need N connections. Without warm-up, N − 1 handshakes start only once sign-in has returned
//! and sit on the critical path (on a single-threaded runtime, one after the other). With
//! [`crate::ClientConfig::warm_connections`], the session's first connect (sign-in's) starts
//! that many more in the background:
//!
//! - at once, the name lookup and the TCP connect (a round trip on a real network);
//! - once the first connection is up (and its first request has been written), the TLS
//!   handshake — so the handshakes' CPU never delays sign-in, and they can resume the first
//!   connection's TLS session when its tickets have arrived.
//!
//! The warm connections are then ready during the sign-in round trip instead of after it.
//! No HTTP request is ever sent for a warm-up: the server sees TCP and TLS only, no API call.
//!
//! reqwest offers no way to put a connection into its pool, so this is done with two connector
//! layers (the connector's request and response types are sealed, hence the generics):
//!
//! - [`TakeLayer`] on the session's client: a new connection is taken from the [`Stash`] when
//!   one is ready (or being made and not yet promised to another call), otherwise connected as
//!   usual. Its first own connect fires the [`Trigger`] and opens the TLS gate when done.
//! - [`PutLayer`] on a second client (the *warmer*, same TLS configuration, resolver, proxies
//!   and socket options): every connection it makes is put into the stash, and its own request
//!   fails with "handed over". The warmer never gets a connection, so its requests never send
//!   a byte of HTTP.
//!
//! A stashed connection older than [`MAX_AGE`] is dropped instead of used (the server may have
//! closed it). Connections nobody took are closed with the session.

use std::{
    future::{Future, poll_fn},
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::sync::Notify;
use tower::{Layer, Service};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// A warm connection unused for longer than this is closed rather than used.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(10);

/// Warm connections, ready or in the making.
pub(crate) struct Stash<C> {
    state: Mutex<State<C>>,
    changed: Notify,
}

struct State<C> {
    /// Made connections, with the time they were made.
    ready: Vec<(Instant, C)>,
    /// Connects under way.
    pending: usize,
    /// Connects announced by the trigger and not started yet (they count as under way, so
    /// that the calls right after sign-in wait for them instead of making more).
    reserved: usize,
    /// Calls waiting for one of the connects under way.
    claims: usize,
}

impl<C> Default for Stash<C> {
    fn default() -> Self {
        Stash {
            state: Mutex::new(State {
                ready: Vec::new(),
                pending: 0,
                reserved: 0,
                claims: 0,
            }),
            changed: Notify::new(),
        }
    }
}

impl<C> Stash<C> {
    fn lock(&self) -> MutexGuard<'_, State<C>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ready connection, or one of the connects under way that no other call waits for;
    /// `None` when there is neither (the caller connects itself).
    async fn take(&self) -> Option<C> {
        let mut claim: Option<Claim<'_, C>> = None;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut st = self.lock();
                while let Some((made, conn)) = st.ready.pop() {
                    if made.elapsed() <= MAX_AGE {
                        return Some(conn);
                    }
                }
                let under_way = st.pending + st.reserved;
                match claim {
                    None if under_way > st.claims => {
                        st.claims += 1;
                        claim = Some(Claim(self));
                    }
                    None => return None,
                    // A connect failed: fewer are under way than there are waiting calls.
                    Some(_) if st.claims > under_way => return None,
                    Some(_) => {}
                }
            }
            changed.await;
        }
        // `claim` is released by its Drop on every return, and if this future is dropped.
    }

    /// Announces `n` connects to come.
    fn reserve(&self, n: usize) {
        self.lock().reserved += n;
    }

    /// Withdraws the announced connects that did not start.
    fn unreserve(&self) {
        self.lock().reserved = 0;
        self.changed.notify_waiters();
    }

    /// Registers a connect under way (an announced one, if any); its [`Delivery`] hands over
    /// the result.
    fn start(self: &Arc<Self>) -> Delivery<C> {
        {
            let mut st = self.lock();
            st.reserved = st.reserved.saturating_sub(1);
            st.pending += 1;
        }
        Delivery(Some(self.clone()))
    }

    fn finish(&self, conn: Option<C>) {
        {
            let mut st = self.lock();
            st.pending -= 1;
            if let Some(c) = conn {
                st.ready.push((Instant::now(), c));
            }
        }
        self.changed.notify_waiters();
    }
}

/// A call's promise to wait for one pending connect.
struct Claim<'a, C>(&'a Stash<C>);

impl<C> Drop for Claim<'_, C> {
    fn drop(&mut self) {
        self.0.lock().claims -= 1;
    }
}

/// Finishes a registered connect exactly once (as failed when dropped unfinished).
struct Delivery<C>(Option<Arc<Stash<C>>>);

impl<C> Delivery<C> {
    fn deliver(mut self, conn: Option<C>) {
        if let Some(stash) = self.0.take() {
            stash.finish(conn);
        }
    }
}

impl<C> Drop for Delivery<C> {
    fn drop(&mut self) {
        if let Some(stash) = self.0.take() {
            stash.finish(None);
        }
    }
}

/// Open once the session's first connect has ended (whatever its outcome): until then, warm
/// connects do not start their TLS handshake.
#[derive(Default)]
pub(crate) struct Gate {
    open: AtomicBool,
    opened: Notify,
}

impl Gate {
    fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    async fn wait(&self) {
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if self.is_open() {
                return;
            }
            opened.await;
        }
    }

    fn open(&self) {
        self.open.store(true, Ordering::Release);
        self.opened.notify_waiters();
    }
}

/// Opens the gate when dropped.
struct GateOpener(Arc<Gate>);

impl Drop for GateOpener {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Lets the request the caller queues on its new connection be written before this task goes
/// on: hyper-util polls the connection's task once, then queues the request, which that task
/// writes (two turns of a current-thread runtime; on a multi-thread one this only reorders).
async fn after_first_request() {
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
}

/// Builds the warmer client (a [`PutLayer`] over the session's stash).
pub(crate) type MakeWarmer = Box<dyn Fn() -> Option<reqwest::Client> + Send + Sync>;

/// Starts the warm-up once: `count` requests through the warmer, each of which makes one
/// connection for the stash and then fails without sending anything.
pub(crate) struct Trigger<C> {
    armed: AtomicBool,
    count: usize,
    url: String,
    gate: Arc<Gate>,
    stash: Arc<Stash<C>>,
    make_warmer: MakeWarmer,
}

/// Withdraws the trigger's announced connects when its task ends, however it ends.
struct Unreserve<C>(Arc<Stash<C>>);

impl<C> Drop for Unreserve<C> {
    fn drop(&mut self) {
        self.0.unreserve();
    }
}

impl<C: Send + 'static> Trigger<C> {
    pub(crate) fn new(
        count: usize,
        url: String,
        gate: Arc<Gate>,
        stash: Arc<Stash<C>>,
        make_warmer: MakeWarmer,
    ) -> Trigger<C> {
        Trigger {
            armed: AtomicBool::new(true),
            count,
            url,
            gate,
            stash,
            make_warmer,
        }
    }

    /// Starts the warm-up the first time only (in a task that runs once the caller's connect
    /// is under way); the caller then opens the gate, by dropping the opener, when its connect
    /// ends.
    fn fire(self: &Arc<Self>) -> Option<GateOpener> {
        if !self.armed.swap(false, Ordering::AcqRel) {
            return None;
        }
        let opener = GateOpener(self.gate.clone());
        let rt = tokio::runtime::Handle::try_current().ok()?;
        self.stash.reserve(self.count);
        let unreserve = Unreserve(self.stash.clone());
        let this = self.clone();
        rt.spawn(async move {
            let _unreserve = unreserve;
            // One connect per turn of the runtime, each after the caller's connection has had
            // its turn: on a current-thread runtime, its TLS hello, the server's answer and
            // its first request are never queued behind the warm-up.
            tokio::task::yield_now().await;
            let Some(warmer) = (this.make_warmer)() else {
                return;
            };
            tracing::debug!(connections = this.count, "warming up connections");
            let mut waited = false;
            let mut tasks = Vec::with_capacity(this.count);
            for _ in 0..this.count {
                tokio::task::yield_now().await;
                if !waited && this.gate.is_open() {
                    after_first_request().await;
                    waited = true;
                }
                let request = warmer.get(&this.url).send();
                tasks.push(tokio::spawn(async move {
                    // Always an error: the connection went to the stash, or the connect failed
                    // (then the call that needs a connection makes its own, with retries).
                    if let Err(e) = request.await
                        && !handed_over(&e)
                    {
                        let e = e.without_url();
                        tracing::debug!(error = %crate::error::chain_text(&e), "warm-up connect failed");
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
        Some(opener)
    }
}

fn handed_over(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<HandedOver>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Layer of the session's client: new connections come from the stash when it has them.
pub(crate) struct TakeLayer<C> {
    pub(crate) stash: Arc<Stash<C>>,
    pub(crate) trigger: Arc<Trigger<C>>,
}

// Manual impls: a derive would require `C: Clone`.
impl<C> Clone for TakeLayer<C> {
    fn clone(&self) -> Self {
        TakeLayer {
            stash: self.stash.clone(),
            trigger: self.trigger.clone(),
        }
    }
}

impl<S: Clone, C> Clone for TakeService<S, C> {
    fn clone(&self) -> Self {
        TakeService {
            inner: self.inner.clone(),
            stash: self.stash.clone(),
            trigger: self.trigger.clone(),
        }
    }
}

impl<S, C> Layer<S> for TakeLayer<C> {
    type Service = TakeService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        TakeService {
            inner,
            stash: self.stash.clone(),
            trigger: self.trigger.clone(),
        }
    }
}

pub(crate) struct TakeService<S, C> {
    inner: S,
    stash: Arc<Stash<C>>,
    trigger: Arc<Trigger<C>>,
}

impl<S, R, C> Service<R> for TakeService<S, C>
where
    S: Service<R, Response = C, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
    R: Send + 'static,
    C: Send + 'static,
{
    type Response = C;
    type Error = BoxError;
    type Future = BoxFuture<C>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness of the inner connector is awaited in `call`, only when it is used.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        let mut inner = self.inner.clone();
        let stash = self.stash.clone();
        let trigger = self.trigger.clone();
        Box::pin(async move {
            if let Some(conn) = stash.take().await {
                return Ok(conn);
            }
            poll_fn(|cx| inner.poll_ready(cx)).await?;
            let connecting = inner.call(req);
            let _opener = trigger.fire();
            connecting.await
        })
    }
}

/// Layer of the warmer client: every connection goes to the stash.
pub(crate) struct PutLayer<C> {
    pub(crate) stash: Arc<Stash<C>>,
    pub(crate) gate: Arc<Gate>,
}

impl<C> Clone for PutLayer<C> {
    fn clone(&self) -> Self {
        PutLayer {
            stash: self.stash.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl<S: Clone, C> Clone for PutService<S, C> {
    fn clone(&self) -> Self {
        PutService {
            inner: self.inner.clone(),
            stash: self.stash.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl<S, C> Layer<S> for PutLayer<C> {
    type Service = PutService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        PutService {
            inner,
            stash: self.stash.clone(),
            gate: self.gate.clone(),
        }
    }
}

pub(crate) struct PutService<S, C> {
    inner: S,
    stash: Arc<Stash<C>>,
    gate: Arc<Gate>,
}

/// The warmer's requests end with this error once their connection is in the stash.
#[derive(Debug)]
struct HandedOver;

impl std::fmt::Display for HandedOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("warm-up connection handed over to the session")
    }
}

impl std::error::Error for HandedOver {}

impl<S, R, C> Service<R> for PutService<S, C>
where
    S: Service<R, Response = C, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
    R: Send + 'static,
    C: Send + 'static,
{
    type Response = C;
    type Error = BoxError;
    type Future = BoxFuture<C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let delivery = self.stash.start();
        let connecting = self.inner.call(req);
        let gate = self.gate.clone();
        Box::pin(async move {
            let mut connecting = std::pin::pin!(connecting);
            // First step now: name lookup, TCP connect.
            let result = match poll_fn(|cx| Poll::Ready(connecting.as_mut().poll(cx))).await {
                Poll::Ready(r) => r,
                Poll::Pending => {
                    // The TLS handshake waits for the session's first connection and its
                    // first request.
                    gate.wait().await;
                    after_first_request().await;
                    connecting.await
                }
            };
            match result {
                Ok(conn) => {
                    delivery.deliver(Some(conn));
                    Err(Box::new(HandedOver) as BoxError)
                }
                Err(e) => {
                    delivery.deliver(None);
                    Err(e)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn take_waits_for_pending_and_falls_back() {
        let stash: Arc<Stash<u32>> = Arc::default();
        assert_eq!(stash.take().await, None, "nothing under way");

        let d1 = stash.start();
        let d2 = stash.start();
        let s = stash.clone();
        let waiter = tokio::spawn(async move { s.take().await });
        tokio::task::yield_now().await;
        d1.deliver(Some(7));
        assert_eq!(waiter.await.unwrap(), Some(7));

        // One pending connect: the first call claims it, a second one does not wait.
        let s = stash.clone();
        let first = tokio::spawn(async move { s.take().await });
        tokio::task::yield_now().await;
        assert_eq!(stash.take().await, None);
        drop(d2); // the connect failed
        assert_eq!(first.await.unwrap(), None);
        let st = stash.lock();
        assert_eq!((st.pending, st.claims, st.ready.len()), (0, 0, 0));
    }

    #[tokio::test]
    async fn announced_connects_are_waited_for_until_withdrawn() {
        let stash: Arc<Stash<u32>> = Arc::default();
        stash.reserve(2);
        let s = stash.clone();
        let first = tokio::spawn(async move { s.take().await });
        let s = stash.clone();
        let second = tokio::spawn(async move { s.take().await });
        tokio::task::yield_now().await;
        // One announced connect starts and delivers; the other is withdrawn unstarted.
        let d = stash.start();
        {
            let st = stash.lock();
            assert_eq!((st.pending, st.reserved), (1, 1));
        }
        d.deliver(Some(3));
        tokio::task::yield_now().await;
        stash.unreserve();
        let mut got = vec![first.await.unwrap(), second.await.unwrap()];
        got.sort();
        assert_eq!(got, vec![None, Some(3)]);
        let st = stash.lock();
        assert_eq!((st.pending, st.reserved, st.claims), (0, 0, 0));
    }

    #[tokio::test]
    async fn ready_connections_are_used_first() {
        let stash: Arc<Stash<u32>> = Arc::default();
        stash.start().deliver(Some(1));
        stash.start().deliver(None);
        assert_eq!(stash.take().await, Some(1));
        assert_eq!(stash.take().await, None);
    }

    #[tokio::test]
    async fn old_connections_are_dropped() {
        let stash: Arc<Stash<u32>> = Arc::default();
        let Some(old) = Instant::now().checked_sub(MAX_AGE + Duration::from_secs(1)) else {
            return;
        };
        stash.lock().ready.push((old, 1));
        assert_eq!(stash.take().await, None);
        assert!(stash.lock().ready.is_empty());
    }
}
