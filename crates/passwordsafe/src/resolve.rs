//! Name resolution without the C library, for static binaries where glibc's `getaddrinfo`
//! cannot load NSS modules (the agent on a `FROM scratch` image): hickory-resolver reads
//! `/etc/hosts` and `/etc/resolv.conf` (`search`/`domain`, `options ndots: timeout: attempts:`,
//! as Kubernetes pods rely on) and asks the nameservers over UDP, with TCP on truncation.
//!
//! hickory-resolver is used directly rather than through reqwest's `hickory-dns` feature, which
//! builds one resolver per HTTP client (so per session: no cache between sign-ins) and, when
//! `/etc/resolv.conf` is missing or lists no nameserver, silently asks Google's public DNS
//! servers: it would send the names of internal hosts to the Internet. Here that case is an
//! error naming the file.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use hickory_resolver::{TokioResolver, config::LookupIpStrategy, net::NetError};

/// Longest time a DNS answer is reused (shorter when the records' TTL is), so a Service that
/// moves is followed within a minute.
const MAX_CACHE_TTL: Duration = Duration::from_secs(60);

/// Why a host name could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// `/etc/resolv.conf` is missing, unreadable or lists no nameserver.
    #[error(
        "cannot resolve host {host:?}: /etc/resolv.conf is unusable ({source}); it must list at least one nameserver"
    )]
    Config {
        /// Host asked for.
        host: String,
        /// What hickory-resolver reported.
        #[source]
        source: NetError,
    },
    /// No address for the name (after the hosts file and every `search` candidate), or no
    /// nameserver answered.
    #[error("cannot resolve host {host:?}: {source}")]
    Lookup {
        /// Host asked for.
        host: String,
        /// What hickory-resolver reported.
        #[source]
        source: NetError,
    },
}

/// The resolver of a [`crate::Client`], shared by all its sessions (one cache). Built at the
/// first lookup, inside the runtime that makes it, from the files as they are then.
#[derive(Clone, Debug, Default)]
pub(crate) struct HickoryResolver {
    state: Arc<OnceLock<TokioResolver>>,
}

impl HickoryResolver {
    fn resolver(&self, host: &str) -> Result<TokioResolver, ResolveError> {
        if let Some(r) = self.state.get() {
            return Ok(r.clone());
        }
        let config = |source| ResolveError::Config {
            host: host.to_owned(),
            source,
        };
        let mut builder = TokioResolver::builder_tokio().map_err(config)?;
        let opts = builder.options_mut();
        // A first, AAAA only when there is no A record (IPv6-only clusters). Asking both at
        // once would make a name found in /etc/hosts for one family wait for the nameservers
        // (up to timeout × attempts) for the other.
        opts.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        opts.positive_max_ttl = Some(MAX_CACHE_TTL);
        let built = builder.build().map_err(config)?;
        // Two first lookups at once may both build one; the first stored is kept.
        Ok(self.state.get_or_init(|| built).clone())
    }

    async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let resolver = self.resolver(host)?;
        let found = resolver
            .lookup_ip(host)
            .await
            .map_err(|source| ResolveError::Lookup {
                host: host.to_owned(),
                source,
            })?;
        Ok(found.iter().map(|ip| SocketAddr::new(ip, 0)).collect())
    }
}

impl reqwest::dns::Resolve for HickoryResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.lookup(name.as_str()).await?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}
