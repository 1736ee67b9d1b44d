//! A small pure-Rust stub resolver, for static binaries where glibc's `getaddrinfo` cannot load
//! NSS modules (for example a static agent on a `FROM scratch` image).
//!
//! Order: IP literals need no lookup; then `/etc/hosts`; then the nameservers of
//! `/etc/resolv.conf` (at most 3; 127.0.0.1 when none), honouring `search` / `domain`,
//! `options ndots:N timeout:N attempts:N` like glibc (Kubernetes pods rely on `search` and
//! `ndots:5`). A and AAAA are asked concurrently over UDP, with TCP when the answer is truncated.
//! IPv4 addresses come first. `localhost` resolves to the loopback addresses even without a hosts
//! file. Both files are read at every uncached lookup; DNS answers are cached for their TTL (at
//! most 60 s), hosts-file entries are not cached.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

/// Resolution failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// No address exists for the name (NXDOMAIN or no A/AAAA records for every candidate).
    #[error("host {0:?} not found")]
    NotFound(String),
    /// The name is not a valid DNS name.
    #[error("host {0:?} is not a valid DNS name")]
    InvalidName(String),
    /// No nameserver gave a usable answer in time.
    #[error("no nameserver answered for {name:?} ({reason})")]
    NoAnswer {
        /// Name asked for.
        name: String,
        /// Last failure.
        reason: String,
    },
}

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// Longest time a DNS answer is reused (shorter when the records' TTL is).
const MAX_CACHE_TTL: Duration = Duration::from_secs(60);

type Cache = HashMap<String, (Instant, Vec<IpAddr>)>;

/// The built-in resolver; implements [`reqwest::dns::Resolve`]. Clones share a small cache of
/// DNS answers (bounded by the records' TTL and 60 s); concurrent lookups of a name wait for one
/// another, so a burst of new connections asks the nameservers once.
#[derive(Clone, Debug)]
pub struct BuiltinResolver {
    hosts_path: PathBuf,
    resolv_conf_path: PathBuf,
    port: u16,
    cache: Arc<tokio::sync::Mutex<Cache>>,
}

impl Default for BuiltinResolver {
    fn default() -> Self {
        BuiltinResolver::with_files("/etc/hosts", "/etc/resolv.conf")
    }
}

impl BuiltinResolver {
    /// A resolver reading other files than `/etc/hosts` and `/etc/resolv.conf`.
    pub fn with_files(hosts: impl Into<PathBuf>, resolv_conf: impl Into<PathBuf>) -> BuiltinResolver {
        BuiltinResolver {
            hosts_path: hosts.into(),
            resolv_conf_path: resolv_conf.into(),
            port: 53,
            cache: Arc::default(),
        }
    }

    /// Resolves a host name to its addresses (IPv4 first).
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let key = host.to_ascii_lowercase();
        let mut cache = self.cache.lock().await;
        if let Some((until, addrs)) = cache.get(&key)
            && Instant::now() < *until
        {
            return Ok(addrs.clone());
        }
        cache.retain(|_, (until, _)| Instant::now() < *until);
        let (addrs, ttl) = self.resolve_uncached(host).await?;
        if !ttl.is_zero() {
            cache.insert(key, (Instant::now() + ttl.min(MAX_CACHE_TTL), addrs.clone()));
        }
        Ok(addrs)
    }

    /// Hosts file, then DNS. Returns the addresses and how long they may be cached (zero for
    /// the hosts file, which is re-read every time).
    async fn resolve_uncached(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), DnsError> {
        let bare = host.trim_end_matches('.');
        if bare.is_empty() {
            return Err(DnsError::InvalidName(host.to_owned()));
        }
        let hosts = std::fs::read_to_string(&self.hosts_path).unwrap_or_default();
        let found = hosts_lookup(&hosts, bare);
        if !found.is_empty() {
            return Ok((found, Duration::ZERO));
        }
        if bare.eq_ignore_ascii_case("localhost") {
            let loopback = vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
            return Ok((loopback, Duration::ZERO));
        }
        let conf = ResolvConf::parse(&std::fs::read_to_string(&self.resolv_conf_path).unwrap_or_default());
        let servers: Vec<SocketAddr> = conf
            .nameservers
            .iter()
            .map(|ip| SocketAddr::new(*ip, self.port))
            .collect();
        for candidate in conf.candidates(host) {
            encode_query(0, &candidate, TYPE_A).map_err(|_| DnsError::InvalidName(host.to_owned()))?;
            let (a, aaaa) = tokio::join!(
                query(&servers, &candidate, TYPE_A, &conf),
                query(&servers, &candidate, TYPE_AAAA, &conf)
            );
            let mut addrs = Vec::new();
            let mut ttl = u32::MAX;
            let mut definite = false;
            let mut failure = None;
            for r in [a, aaaa] {
                match r {
                    Ok(Answer::Addrs(v, t)) => {
                        definite = true;
                        addrs.extend(v);
                        ttl = ttl.min(t);
                    }
                    Ok(Answer::NxDomain | Answer::NoData) => definite = true,
                    Ok(other) => failure = Some(format!("{other:?}")),
                    Err(e) => failure = Some(e),
                }
            }
            if !addrs.is_empty() {
                tracing::debug!(host, candidate, count = addrs.len(), ttl, "resolved");
                return Ok((addrs, Duration::from_secs(u64::from(ttl))));
            }
            if !definite {
                return Err(DnsError::NoAnswer {
                    name: candidate,
                    reason: failure.unwrap_or_else(|| "no nameserver".to_owned()),
                });
            }
        }
        Err(DnsError::NotFound(host.to_owned()))
    }
}

impl reqwest::dns::Resolve for BuiltinResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = this.lookup(&host).await?;
            let iter: reqwest::dns::Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(iter)
        }) as Pin<Box<dyn Future<Output = _> + Send>>
    }
}

/// Looks a name up in hosts-file text (case-insensitive, every matching line).
fn hosts_lookup(text: &str, name: &str) -> Vec<IpAddr> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(ip) = fields
            .next()
            .and_then(|ip| ip.split('%').next()?.parse::<IpAddr>().ok())
        else {
            continue;
        };
        if fields.any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(name)) {
            let list = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
            if !list.contains(&ip) {
                list.push(ip);
            }
        }
    }
    v4.extend(v6);
    v4
}

/// The parts of resolv.conf that matter.
#[derive(Debug, PartialEq)]
struct ResolvConf {
    nameservers: Vec<IpAddr>,
    search: Vec<String>,
    ndots: usize,
    timeout: Duration,
    attempts: u32,
}

impl ResolvConf {
    fn parse(text: &str) -> ResolvConf {
        let mut c = ResolvConf {
            nameservers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(5),
            attempts: 2,
        };
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut it = line.split_whitespace();
            match it.next() {
                Some("nameserver") => {
                    if let Some(ip) = it
                        .next()
                        .and_then(|s| s.split('%').next()?.parse::<IpAddr>().ok())
                        && c.nameservers.len() < 3
                    {
                        c.nameservers.push(ip);
                    }
                }
                // The last of `search` and `domain` wins, as in glibc.
                Some("search") | Some("domain") => {
                    c.search = it
                        .map(|d| d.trim_end_matches('.').to_owned())
                        .filter(|d| !d.is_empty())
                        .collect();
                }
                Some("options") => {
                    for opt in it {
                        let (k, v) = opt.split_once(':').unwrap_or((opt, ""));
                        let n = v.parse::<u64>().ok();
                        match (k, n) {
                            ("ndots", Some(n)) => c.ndots = n.min(15) as usize,
                            ("timeout", Some(n)) => c.timeout = Duration::from_secs(n.clamp(1, 30)),
                            ("attempts", Some(n)) => c.attempts = n.clamp(1, 5) as u32,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if c.nameservers.is_empty() {
            c.nameservers.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        c
    }

    /// The names to try, in order.
    fn candidates(&self, name: &str) -> Vec<String> {
        if let Some(abs) = name.strip_suffix('.') {
            return vec![abs.to_owned()];
        }
        let dots = name.matches('.').count();
        let mut out = Vec::with_capacity(self.search.len() + 1);
        if dots >= self.ndots {
            out.push(name.to_owned());
        }
        out.extend(self.search.iter().map(|d| format!("{name}.{d}")));
        if dots < self.ndots {
            out.push(name.to_owned());
        }
        out
    }
}

/// The outcome of one query.
#[derive(Debug, PartialEq)]
enum Answer {
    /// Addresses and the smallest TTL among their records.
    Addrs(Vec<IpAddr>, u32),
    NxDomain,
    NoData,
    Truncated,
    ServerFailure(u8),
}

/// Encodes a standard recursive query for `name` and `qtype`.
fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, ()> {
    let mut msg = Vec::with_capacity(18 + name.len());
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&[0x01, 0x00]); // RD
    msg.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // QD=1
    if name.len() > 253 {
        return Err(());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(());
        }
        msg.push(label.len() as u8);
        msg.extend_from_slice(label.as_bytes());
    }
    msg.push(0);
    msg.extend_from_slice(&qtype.to_be_bytes());
    msg.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(msg)
}

fn be16(buf: &[u8], pos: usize) -> Result<u16, &'static str> {
    buf.get(pos..pos + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or("short message")
}

/// Returns the position after a (possibly compressed) name.
fn skip_name(buf: &[u8], mut pos: usize) -> Result<usize, &'static str> {
    loop {
        let len = *buf.get(pos).ok_or("name past end")?;
        match len {
            0 => return Ok(pos + 1),
            l if l & 0xC0 == 0xC0 => {
                buf.get(pos + 1).ok_or("pointer past end")?;
                return Ok(pos + 2);
            }
            l if l & 0xC0 != 0 => return Err("bad label type"),
            l => pos += 1 + l as usize,
        }
    }
}

/// Decodes the answer to a query with `id` and `qtype`.
fn decode_response(buf: &[u8], id: u16, qtype: u16) -> Result<Answer, &'static str> {
    if buf.len() < 12 {
        return Err("short message");
    }
    if be16(buf, 0)? != id {
        return Err("id mismatch");
    }
    let flags = be16(buf, 2)?;
    if flags & 0x8000 == 0 {
        return Err("not a response");
    }
    if flags & 0x0200 != 0 {
        return Ok(Answer::Truncated);
    }
    match (flags & 0x000F) as u8 {
        0 => {}
        3 => return Ok(Answer::NxDomain),
        rcode => return Ok(Answer::ServerFailure(rcode)),
    }
    let qd = be16(buf, 4)?;
    let an = be16(buf, 6)?;
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(buf, pos)? + 4;
    }
    let mut addrs = Vec::new();
    let mut min_ttl = u32::MAX;
    for _ in 0..an {
        pos = skip_name(buf, pos)?;
        let rtype = be16(buf, pos)?;
        let class = be16(buf, pos + 2)?;
        let ttl = (u32::from(be16(buf, pos + 4)?) << 16) | u32::from(be16(buf, pos + 6)?);
        let rdlen = be16(buf, pos + 8)? as usize;
        pos += 10;
        let rdata = buf.get(pos..pos + rdlen).ok_or("record past end")?;
        pos += rdlen;
        if class != CLASS_IN || rtype != qtype {
            continue; // CNAMEs and others: the recursive server already followed them.
        }
        min_ttl = min_ttl.min(ttl);
        match (rtype, rdata.len()) {
            (TYPE_A, 4) => addrs.push(IpAddr::V4(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]))),
            (TYPE_AAAA, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(rdata);
                addrs.push(IpAddr::V6(Ipv6Addr::from(b)));
            }
            _ => return Err("bad address length"),
        }
    }
    Ok(if addrs.is_empty() {
        Answer::NoData
    } else {
        Answer::Addrs(addrs, min_ttl)
    })
}

/// Asks every server (for `attempts` rounds) until one gives a definite answer.
async fn query(servers: &[SocketAddr], name: &str, qtype: u16, conf: &ResolvConf) -> Result<Answer, String> {
    let mut last = "no nameserver".to_owned();
    for _ in 0..conf.attempts {
        for server in servers {
            let id = fastrand::u16(..);
            let Ok(msg) = encode_query(id, name, qtype) else {
                return Err("invalid name".to_owned());
            };
            let mut r = tokio::time::timeout(conf.timeout, udp_exchange(*server, &msg, id, qtype)).await;
            if let Ok(Ok(Answer::Truncated)) = r {
                r = tokio::time::timeout(conf.timeout, tcp_exchange(*server, &msg, id, qtype)).await;
            }
            match r {
                Ok(Ok(a @ (Answer::Addrs(..) | Answer::NxDomain | Answer::NoData))) => return Ok(a),
                Ok(Ok(other)) => last = format!("{server}: {other:?}"),
                Ok(Err(e)) => last = format!("{server}: {e}"),
                Err(_) => last = format!("{server}: timed out"),
            }
        }
    }
    Err(last)
}

async fn udp_exchange(server: SocketAddr, msg: &[u8], id: u16, qtype: u16) -> io::Result<Answer> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    sock.send(msg).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).await?;
        match decode_response(&buf[..n], id, qtype) {
            Err("id mismatch") => continue, // a late answer to an earlier query: keep waiting
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            Ok(a) => return Ok(a),
        }
    }
}

async fn tcp_exchange(server: SocketAddr, msg: &[u8], id: u16, qtype: u16) -> io::Result<Answer> {
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    framed.extend_from_slice(msg);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    decode_response(&buf, id, qtype).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a response to `query` with the given flags and answer records (name = pointer to
    /// the question).
    fn response(query: &[u8], flags: u16, answers: &[(u16, &[u8])]) -> Vec<u8> {
        let mut r = query.to_vec();
        r[2..4].copy_from_slice(&flags.to_be_bytes());
        r[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        for (rtype, rdata) in answers {
            r.extend_from_slice(&[0xC0, 12]);
            r.extend_from_slice(&rtype.to_be_bytes());
            r.extend_from_slice(&CLASS_IN.to_be_bytes());
            r.extend_from_slice(&300u32.to_be_bytes());
            r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            r.extend_from_slice(rdata);
        }
        r
    }

    #[test]
    fn encodes_queries() {
        let q = encode_query(0x1234, "ps.example.com", TYPE_AAAA).unwrap();
        let mut expect = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        expect.extend_from_slice(b"\x02ps\x07example\x03com\x00");
        expect.extend_from_slice(&[0, 28, 0, 1]);
        assert_eq!(q, expect);
        assert!(encode_query(1, "a..b", TYPE_A).is_err());
        assert!(encode_query(1, &"x".repeat(64), TYPE_A).is_err());
        assert!(encode_query(1, &["abc"; 70].join("."), TYPE_A).is_err());
    }

    #[test]
    fn decodes_answers() {
        let q = encode_query(7, "ps.example.com", TYPE_A).unwrap();
        // A CNAME (ignored) then two A records.
        let cname = b"\x03www\xC0\x0C";
        let r = response(
            &q,
            0x8180,
            &[(5, cname), (TYPE_A, &[10, 0, 0, 1]), (TYPE_A, &[10, 0, 0, 2])],
        );
        assert_eq!(
            decode_response(&r, 7, TYPE_A).unwrap(),
            Answer::Addrs(
                vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
                300
            )
        );
        let q6 = encode_query(8, "h", TYPE_AAAA).unwrap();
        let v6: Ipv6Addr = "fd00::1".parse().unwrap();
        let r = response(&q6, 0x8180, &[(TYPE_AAAA, &v6.octets())]);
        assert_eq!(
            decode_response(&r, 8, TYPE_AAAA).unwrap(),
            Answer::Addrs(vec![IpAddr::V6(v6)], 300)
        );
        assert_eq!(
            decode_response(&response(&q, 0x8183, &[]), 7, TYPE_A).unwrap(),
            Answer::NxDomain
        );
        assert_eq!(
            decode_response(&response(&q, 0x8180, &[]), 7, TYPE_A).unwrap(),
            Answer::NoData
        );
        assert_eq!(
            decode_response(&response(&q, 0x8382, &[]), 7, TYPE_A).unwrap(),
            Answer::Truncated
        );
        assert_eq!(
            decode_response(&response(&q, 0x8182, &[]), 7, TYPE_A).unwrap(),
            Answer::ServerFailure(2)
        );
        assert_eq!(
            decode_response(&response(&q, 0x8180, &[]), 9, TYPE_A),
            Err("id mismatch")
        );
        assert_eq!(decode_response(&q, 7, TYPE_A), Err("not a response"));
        let mut cut = response(&q, 0x8180, &[(TYPE_A, &[1, 2, 3, 4])]);
        cut.truncate(cut.len() - 2);
        assert!(decode_response(&cut, 7, TYPE_A).is_err());
        assert!(decode_response(&response(&q, 0x8180, &[(TYPE_A, &[1, 2, 3])]), 7, TYPE_A).is_err());
        assert!(decode_response(&[0; 5], 0, TYPE_A).is_err());
    }

    #[test]
    fn parses_resolv_conf() {
        let c = ResolvConf::parse(
            "# k8s\nnameserver 10.96.0.10\nnameserver fe80::1%eth0\nsearch ns.svc.cluster.local svc.cluster.local cluster.local\n\
             options ndots:5 timeout:2 attempts:3 rotate\nnameserver 1.1.1.1\nnameserver 8.8.8.8 ; fourth ignored\n",
        );
        assert_eq!(
            c.nameservers,
            [
                "10.96.0.10".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap(),
                "1.1.1.1".parse().unwrap()
            ]
        );
        assert_eq!(
            c.search,
            ["ns.svc.cluster.local", "svc.cluster.local", "cluster.local"]
        );
        assert_eq!((c.ndots, c.timeout, c.attempts), (5, Duration::from_secs(2), 3));
        let d = ResolvConf::parse("search a.example\ndomain corp.example.\n");
        assert_eq!(d.search, ["corp.example"]);
        assert_eq!(d.nameservers, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        assert_eq!((d.ndots, d.attempts), (1, 2));
    }

    #[test]
    fn search_list_order() {
        let c = ResolvConf::parse("search ns.svc.cluster.local svc.cluster.local\noptions ndots:5\n");
        // Few dots: search domains first, the name as given last.
        assert_eq!(
            c.candidates("pws.vault"),
            [
                "pws.vault.ns.svc.cluster.local",
                "pws.vault.svc.cluster.local",
                "pws.vault"
            ]
        );
        // Enough dots: as given first.
        assert_eq!(
            c.candidates("a.b.c.d.example.com"),
            [
                "a.b.c.d.example.com",
                "a.b.c.d.example.com.ns.svc.cluster.local",
                "a.b.c.d.example.com.svc.cluster.local"
            ]
        );
        // Absolute names skip the search list.
        assert_eq!(c.candidates("pws.example.com."), ["pws.example.com"]);
        let c1 = ResolvConf::parse("search corp\n");
        assert_eq!(
            c1.candidates("host.example"),
            ["host.example", "host.example.corp"]
        );
        assert_eq!(c1.candidates("host"), ["host.corp", "host"]);
    }

    #[test]
    fn hosts_file() {
        let text = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n10.1.2.3 pws.corp pws # comment\n\
                    # 10.9.9.9 pws\nfd00::3 PWS.corp.\n10.1.2.3 pws\n";
        assert_eq!(
            hosts_lookup(text, "pws.corp"),
            ["10.1.2.3".parse::<IpAddr>().unwrap(), "fd00::3".parse().unwrap()]
        );
        assert_eq!(hosts_lookup(text, "pws"), ["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert!(hosts_lookup(text, "other").is_empty());
    }

    /// A fake nameserver on 127.0.0.1: answers `pws.ns.svc` with an A record, NXDOMAIN for the
    /// rest; with `truncate`, UDP answers are truncated and the real one comes over TCP.
    async fn fake_server(
        truncate: bool,
    ) -> (
        u16,
        Arc<std::sync::atomic::AtomicUsize>,
        tokio::task::JoinHandle<()>,
    ) {
        let queries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = queries.clone();
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = udp.local_addr().unwrap().port();
        let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        fn answer(q: &[u8]) -> Vec<u8> {
            let name_end = skip_name(q, 12).unwrap();
            let qtype = be16(q, name_end).unwrap();
            if &q[12..name_end] == b"\x03pws\x02ns\x03svc\x00" && qtype == TYPE_A {
                response(q, 0x8180, &[(TYPE_A, &[10, 0, 0, 7])])
            } else if &q[12..name_end] == b"\x03pws\x02ns\x03svc\x00" {
                response(q, 0x8180, &[])
            } else {
                response(q, 0x8183, &[])
            }
        }
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                tokio::select! {
                    r = udp.recv_from(&mut buf) => {
                        let (n, peer) = r.unwrap();
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let mut a = answer(&buf[..n]);
                        if truncate {
                            a = response(&buf[..n], 0x8380, &[]);
                        }
                        udp.send_to(&a, peer).await.unwrap();
                    }
                    r = tcp.accept() => {
                        let (mut s, _) = r.unwrap();
                        let len = s.read_u16().await.unwrap() as usize;
                        let mut q = vec![0u8; len];
                        s.read_exact(&mut q).await.unwrap();
                        let a = answer(&q);
                        s.write_all(&(a.len() as u16).to_be_bytes()).await.unwrap();
                        s.write_all(&a).await.unwrap();
                    }
                }
            }
        });
        (port, queries, task)
    }

    fn resolver(dir: &std::path::Path, port: u16) -> BuiltinResolver {
        std::fs::write(dir.join("hosts"), "10.5.5.5 fromhosts\n").unwrap();
        std::fs::write(
            dir.join("resolv.conf"),
            "nameserver 127.0.0.1\nsearch ns.svc\noptions ndots:2 timeout:1\n",
        )
        .unwrap();
        BuiltinResolver {
            port,
            ..BuiltinResolver::with_files(dir.join("hosts"), dir.join("resolv.conf"))
        }
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ps-dns-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn resolves_over_udp_and_tcp_with_search() {
        for truncate in [false, true] {
            let (port, queries, task) = fake_server(truncate).await;
            let dir = tempdir("udp");
            let r = resolver(&dir, port);
            assert_eq!(
                r.lookup("pws").await.unwrap(),
                ["10.0.0.7".parse::<IpAddr>().unwrap()]
            );
            // Answers are cached (TTL 300 s, capped at 60 s): no new query.
            let asked = queries.load(std::sync::atomic::Ordering::SeqCst);
            assert!(asked >= 2);
            assert_eq!(
                r.clone().lookup("PWS").await.unwrap(),
                ["10.0.0.7".parse::<IpAddr>().unwrap()]
            );
            assert_eq!(queries.load(std::sync::atomic::Ordering::SeqCst), asked);
            assert_eq!(
                r.lookup("fromhosts").await.unwrap(),
                ["10.5.5.5".parse::<IpAddr>().unwrap()]
            );
            assert_eq!(
                r.lookup("192.0.2.1").await.unwrap(),
                ["192.0.2.1".parse::<IpAddr>().unwrap()]
            );
            assert_eq!(
                r.lookup("[::1]").await.unwrap(),
                [IpAddr::V6(Ipv6Addr::LOCALHOST)]
            );
            assert_eq!(r.lookup("localhost").await.unwrap().len(), 2);
            assert!(matches!(r.lookup("missing").await, Err(DnsError::NotFound(_))));
            assert!(matches!(r.lookup("a..b").await, Err(DnsError::InvalidName(_))));
            task.abort();
            std::fs::remove_dir_all(dir).ok();
        }
    }

    #[tokio::test]
    async fn silent_server_gives_no_answer() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let dir = tempdir("silent");
        let mut r = resolver(&dir, port);
        std::fs::write(
            dir.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .unwrap();
        r.port = port;
        assert!(matches!(
            r.lookup("pws.example").await,
            Err(DnsError::NoAnswer { .. })
        ));
        drop(silent);
        std::fs::remove_dir_all(dir).ok();
    }
}
