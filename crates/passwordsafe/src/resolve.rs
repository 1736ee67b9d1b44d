//! Name resolution without the C library, for static binaries where glibc's `getaddrinfo`
//! cannot load NSS modules (the agent on a `FROM scratch` image): hickory-resolver reads
//! `/etc/hosts` and `/etc/resolv.conf` (`search`/`domain`, `options ndots: timeout: attempts:`,
//! as Kubernetes pods rely on) and asks the nameservers over UDP, with TCP on truncation.
//!
//! hickory-resolver is used directly rather than through reqwest's `hickory-dns` feature, which
//! builds one resolver per HTTP client (so per session: no cache between sign-ins) and, when
//! `/etc/resolv.conf` is missing or lists no nameserver, silently asks Google's public DNS
//! servers: it would send the names of internal hosts to the Internet. Here that case means
//! "the hosts file only": a pod with `dnsPolicy: None` (or a node without nameservers) still
//! reaches a Password Safe named in `hostAliases`, and any other name fails with an error naming
//! both files.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use hickory_resolver::{
    TokioResolver,
    config::{LookupIpStrategy, ResolverConfig},
    net::{NetError, runtime::TokioRuntimeProvider},
};

/// Longest time a DNS answer is reused (shorter when the records' TTL is), so a Service that
/// moves is followed within a minute.
const MAX_CACHE_TTL: Duration = Duration::from_secs(60);

/// Why a host name could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The name is not in `/etc/hosts`, and `/etc/resolv.conf` is missing, unreadable or lists
    /// no nameserver to ask.
    #[error(
        "cannot resolve host {host:?}: it is not in /etc/hosts, and /etc/resolv.conf is unusable ({reason}); list a nameserver there, or the host in /etc/hosts (a pod's hostAliases)"
    )]
    NoNameserver {
        /// Host asked for.
        host: String,
        /// Why `/etc/resolv.conf` could not be used, as hickory-resolver reported it.
        reason: String,
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
    state: Arc<OnceLock<Built>>,
}

#[derive(Clone, Debug)]
struct Built {
    resolver: TokioResolver,
    /// Why `/etc/resolv.conf` is not used, when the resolver answers from `/etc/hosts` only.
    hosts_only: Option<String>,
}

impl HickoryResolver {
    fn resolver(&self) -> Result<Built, NetError> {
        if let Some(r) = self.state.get() {
            return Ok(r.clone());
        }
        let (mut builder, hosts_only) = match TokioResolver::builder_tokio() {
            Ok(builder) => (builder, None),
            Err(unusable) => (
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
                    TokioRuntimeProvider::default(),
                ),
                Some(unusable.to_string()),
            ),
        };
        let opts = builder.options_mut();
        // A first, AAAA only when there is no A record (IPv6-only clusters). Asking both at
        // once would make a name found in /etc/hosts for one family wait for the nameservers
        // (up to timeout × attempts) for the other.
        opts.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        opts.positive_max_ttl = Some(MAX_CACHE_TTL);
        let built = Built {
            resolver: builder.build()?,
            hosts_only,
        };
        // Two first lookups at once may both build one; the first stored is kept.
        Ok(self.state.get_or_init(|| built).clone())
    }

    async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let lookup_error = |source| ResolveError::Lookup {
            host: host.to_owned(),
            source,
        };
        let built = self.resolver().map_err(lookup_error)?;
        let found = built
            .resolver
            .lookup_ip(host)
            .await
            .map_err(|source| match built.hosts_only {
                Some(reason) => ResolveError::NoNameserver {
                    host: host.to_owned(),
                    reason,
                },
                None => lookup_error(source),
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
