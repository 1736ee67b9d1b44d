//! Telling the app about a new generation ([`ChangeSignal`]), and the readiness endpoint.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use inject_api::{ChangeSignal, UnixSignal};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::writer::Root;

/// Sends the configured signal after generation `generation` was switched in.
/// Failures are returned as text for a warning; they never fail the refresh.
pub async fn notify(signal: &ChangeSignal, root: &Root, generation: &str) -> Result<String, String> {
    match signal {
        ChangeSignal::File(name) => root
            .write_meta(name, format!("{generation}\n").as_bytes())
            .map(|()| format!("wrote marker file {name}"))
            .map_err(|e| e.to_string()),
        ChangeSignal::Process { process, signal } => signal_processes(process, *signal),
        ChangeSignal::Http { port, path } => http_post(*port, path, generation).await,
    }
}

fn signal_number(s: UnixSignal) -> rustix::process::Signal {
    use rustix::process::Signal;
    match s {
        UnixSignal::Hup => Signal::HUP,
        UnixSignal::Usr1 => Signal::USR1,
        UnixSignal::Usr2 => Signal::USR2,
        UnixSignal::Term => Signal::TERM,
    }
}

/// Signals every process (other than this one) whose `/proc/PID/comm` equals `name` (compared
/// on the first 15 bytes, the kernel's limit for `comm`).
fn signal_processes(name: &str, sig: UnixSignal) -> Result<String, String> {
    let want = &name.as_bytes()[..name.len().min(15)];
    let me = std::process::id();
    let mut sent = 0;
    let mut errors = Vec::new();
    let dir = std::fs::read_dir("/proc").map_err(|e| format!("cannot list /proc: {e}"))?;
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid as u32 == me {
            continue;
        }
        let Ok(comm) = std::fs::read(entry.path().join("comm")) else {
            continue;
        };
        if comm.strip_suffix(b"\n").unwrap_or(&comm) != want {
            continue;
        }
        let Some(pid) = rustix::process::Pid::from_raw(pid) else {
            continue;
        };
        match rustix::process::kill_process(pid, signal_number(sig)) {
            Ok(()) => sent += 1,
            Err(e) => errors.push(format!("pid {}: {e}", pid.as_raw_nonzero())),
        }
    }
    match (sent, errors.is_empty()) {
        (0, true) => Err(format!(
            "no process named {name:?} found (is shareProcessNamespace: true set on the pod?)"
        )),
        (_, true) => Ok(format!("sent {sig:?} to {sent} process(es) named {name:?}")),
        _ => Err(format!("signalling {name:?}: {}", errors.join(", "))),
    }
}

/// `POST http://127.0.0.1:<port><path>` with `{"generation": "..."}`; any 2xx is success.
async fn http_post(port: u16, path: &str, generation: &str) -> Result<String, String> {
    let body = serde_json::json!({ "generation": generation }).to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: ps-agent\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| format!("POST 127.0.0.1:{port}{path}: no answer within 5 s"))?
        .map_err(|e| format!("POST 127.0.0.1:{port}{path}: {e}"))?;
    let status = std::str::from_utf8(&buf)
        .ok()
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(s) if (200..300).contains(&s) => Ok(format!("POST 127.0.0.1:{port}{path}: HTTP {s}")),
        Some(s) => Err(format!("POST 127.0.0.1:{port}{path}: HTTP {s}")),
        None => Err(format!("POST 127.0.0.1:{port}{path}: not an HTTP answer")),
    }
}

/// Serves `GET /ready` on `0.0.0.0:<port>` (the kubelet probes the pod IP): 200 once the first
/// generation is in place, 503 before. Anything else gets 404.
/// The readiness listener for `readiness.httpPort`: the listening socket the agent was given
/// as its standard input when it is bound to `port` (inetd's `wait` convention; the tests hand
/// over a socket bound to port 0 this way, so no other process can take the port between a
/// probe for a free one and the agent's bind), otherwise a new socket on 0.0.0.0:`port`.
pub fn readiness_listener(port: u16) -> std::io::Result<std::net::TcpListener> {
    match inherited_listener(port) {
        Some(listener) => Ok(listener),
        None => std::net::TcpListener::bind(("0.0.0.0", port)),
    }
}

fn inherited_listener(port: u16) -> Option<std::net::TcpListener> {
    let stdin = std::io::stdin();
    if !rustix::net::sockopt::socket_acceptconn(&stdin).ok()? {
        return None;
    }
    let listener = std::net::TcpListener::from(rustix::io::dup(&stdin).ok()?);
    (listener.local_addr().ok()?.port() == port).then_some(listener)
}

/// Answers `GET /ready` on `listener`: 200 once `ready` is set, 503 before.
pub async fn serve_readiness(listener: std::net::TcpListener, ready: Arc<AtomicBool>) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "readiness endpoint listening (GET /ready)");
    loop {
        let (stream, _) = listener.accept().await?;
        let ready = ready.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, ready)).await;
        });
    }
}

async fn answer(mut s: TcpStream, ready: Arc<AtomicBool>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    let (status, body) = match (method, path) {
        (b"GET" | b"HEAD", b"/ready") if ready.load(Ordering::SeqCst) => ("200 OK", "ready\n"),
        (b"GET" | b"HEAD", b"/ready") => ("503 Service Unavailable", "not ready\n"),
        _ => ("404 Not Found", "not found\n"),
    };
    let body = if method == b"HEAD" { "" } else { body };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_answers() {
        let ready = Arc::new(AtomicBool::new(false));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(serve_readiness(listener, ready.clone()));
        let get = |path: &'static str| async move {
            for _ in 0..50 {
                if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
                    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                        .await
                        .unwrap();
                    let mut out = String::new();
                    s.read_to_string(&mut out).await.unwrap();
                    return out;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("no listener");
        };
        assert!(get("/ready").await.starts_with("HTTP/1.1 503"));
        ready.store(true, Ordering::SeqCst);
        assert!(get("/ready").await.starts_with("HTTP/1.1 200"));
        assert!(get("/other").await.starts_with("HTTP/1.1 404"));
    }

    #[tokio::test]
    async fn http_signal_posts() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let r = http_post(port, "/reload", "..gen").await.unwrap();
        assert!(r.contains("HTTP 204"), "{r}");
        let req = server.await.unwrap();
        assert!(req.starts_with("POST /reload HTTP/1.1\r\n"), "{req}");
        assert!(req.ends_with("{\"generation\":\"..gen\"}"), "{req}");
    }

    #[test]
    fn no_process_found_is_an_error() {
        let e = signal_processes("no-such-proc-xyz", UnixSignal::Hup).unwrap_err();
        assert!(e.contains("shareProcessNamespace"), "{e}");
    }
}
