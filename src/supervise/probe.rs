//! Health probes: an HTTP/1.1 GET with a time limit, where "healthy" means a 2xx answer.
//!
//! Each instance task owns one `Prober`, and with it at most one connection to its gateway, kept
//! between probes when the answer allows it. There is no pool, no connection task and no buffer held
//! while idle: with 500 instances probed every 10 s, a pooled client (hyper-util's) cost the daemon
//! about 20 KB per instance and ~100 µs of CPU per probe. The request is written once per URL; the
//! answer's head is parsed by `httparse` (hyper's own parser) and its body is read and dropped.
//!
//! On a kept connection a probe is one `sendto` and one `recvfrom`, about 22 µs of daemon CPU all in
//! (`cargo bench --bench supervise -- idle ours`); over half of it is the kernel's loopback send,
//! which delivers the request into the gateway's socket and wakes the gateway on the daemon's time.
//!
//! A new connection is handed to a [`Verify`] before a request goes into it: the instance task's
//! check that the socket listening there is its own tree's (`ownership`), about 6 µs, once per
//! connection, not per probe.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest answer head read; gateways answer probes with a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
/// The largest body read to keep the connection; a longer one is left unread and the connection dropped.
const MAX_BODY: u64 = 64 * 1024;

/// A probe URL made ready to send: where to connect and the bytes of its request.
#[derive(Debug, Clone)]
struct Target {
    url: String,
    /// `host:port`, as `TcpStream::connect` takes it.
    authority: String,
    request: Box<[u8]>,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let u = url::Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
        if u.scheme() != "http" {
            return Err(format!("bad URL {url}: only http:// is probed"));
        }
        let host = match u.host() {
            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
            Some(h) => h.to_string(),
            None => return Err(format!("bad URL {url}: no host")),
        };
        let port = u.port().unwrap_or(80);
        let mut path = u.path().to_string();
        if let Some(q) = u.query() {
            path.push('?');
            path.push_str(q);
        }
        let host_header = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: openclaw-supervisord/{}\r\nAccept: */*\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        Ok(Target {
            url: url.to_string(),
            authority: format!("{host}:{port}"),
            request: request.into_bytes().into_boxed_slice(),
        })
    }
}

/// An instance's readiness and liveness probes, and the connection they share.
pub struct Prober {
    readiness: Result<Target, String>,
    liveness: Result<Target, String>,
    conn: Conn,
}

/// What one exchange on a connection gave.
enum Failure {
    /// The connection closed or broke before a byte of answer: on a reused connection, the server
    /// had dropped it while idle, and a new connection may well succeed.
    Unanswered(std::io::Error),
    /// Anything else: a refused connection, a broken answer.
    Other(String),
}

impl Prober {
    pub fn new(readiness_url: &str, liveness_url: &str) -> Prober {
        Prober {
            readiness: Target::parse(readiness_url),
            liveness: Target::parse(liveness_url),
            conn: None,
        }
    }

    /// Forgets the connection, e.g. when the child it went to has exited.
    pub fn reset(&mut self) {
        self.conn = None;
    }

    /// GETs the readiness URL within `timeout`; a new connection counts only once `verify` accepts
    /// the address it reached.
    pub async fn ready(
        &mut self,
        timeout: Duration,
        verify: &mut impl Verify,
    ) -> Result<(), String> {
        probe(&mut self.conn, &self.readiness, timeout, verify).await
    }

    /// GETs the liveness URL within `timeout`, as `ready` does.
    pub async fn live(
        &mut self,
        timeout: Duration,
        verify: &mut impl Verify,
    ) -> Result<(), String> {
        probe(&mut self.conn, &self.liveness, timeout, verify).await
    }
}

/// Decides whether a new connection reached the instance: called with the address it connected
/// to, before a request is written into it. A kept connection is not asked about again: it goes on
/// talking to the socket that accepted it.
pub trait Verify {
    /// `Ok` if the socket listening on `peer` is the instance's; else why not.
    fn verify(&mut self, peer: SocketAddr)
        -> impl std::future::Future<Output = Result<(), String>>;
}

/// No check: whatever answers counts.
impl Verify for () {
    async fn verify(&mut self, _peer: SocketAddr) -> Result<(), String> {
        Ok(())
    }
}

/// The open connection of a `Prober`, and the `host:port` it goes to.
type Conn = Option<(String, TcpStream)>;

async fn probe(
    conn: &mut Conn,
    target: &Result<Target, String>,
    timeout: Duration,
    verify: &mut impl Verify,
) -> Result<(), String> {
    let target = target.as_ref().map_err(Clone::clone)?;
    let url = &target.url;
    match tokio::time::timeout(timeout, get(conn, target, verify)).await {
        Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(format!("GET {url}: HTTP {status}")),
        Ok(Err(e)) => {
            *conn = None;
            Err(format!("GET {url}: {e}"))
        }
        Err(_) => {
            // Part of an answer may still be on its way: never reuse this connection.
            *conn = None;
            Err(format!(
                "GET {url}: no answer within {}",
                humantime::format_duration(timeout)
            ))
        }
    }
}

/// One GET, on the kept connection if there is one (and once more on a new one if the kept one
/// turns out closed), else on a new one. Returns the answer's status.
async fn get(conn: &mut Conn, target: &Target, verify: &mut impl Verify) -> Result<u16, String> {
    if let Some((authority, mut stream)) = conn.take() {
        if authority == target.authority && idle_and_open(&stream) {
            match exchange(&mut stream, &target.request).await {
                Ok((status, reusable)) => {
                    if reusable {
                        *conn = Some((authority, stream));
                    }
                    return Ok(status);
                }
                Err(Failure::Unanswered(_)) => {}
                Err(Failure::Other(e)) => return Err(e),
            }
        }
    }
    let mut stream = TcpStream::connect(&target.authority)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let peer = stream
        .peer_addr()
        .map_err(|e| format!("connected, but no peer address: {e}"))?;
    verify.verify(peer).await?;
    // Requests are one small write; never wait for more to fill a segment.
    let _ = stream.set_nodelay(true);
    match exchange(&mut stream, &target.request).await {
        Ok((status, reusable)) => {
            if reusable {
                *conn = Some((target.authority.clone(), stream));
            }
            Ok(status)
        }
        Err(Failure::Unanswered(e)) => Err(format!("connection closed without an answer: {e}")),
        Err(Failure::Other(e)) => Err(e),
    }
}

/// Whether a kept connection can carry a request: nothing arrived on it since the last answer. A
/// server that closed it while idle (Node's HTTP server does after its keep-alive timeout, 5 s by
/// default, shorter than the probe interval) left an end-of-file to read; seeing it here saves
/// writing a request into a closing connection and waiting for the answer that will not come. It
/// costs nothing on a connection that stayed open: the last answer's read was short, so tokio holds
/// the socket not readable and answers without a syscall; only an event since (the end-of-file)
/// makes it read.
fn idle_and_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Writes `request` and reads one answer: its status, and whether the connection can carry the next
/// request (HTTP/1.1, no `Connection: close`, a body of known length that was read whole).
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Result<(u16, bool), Failure> {
    stream
        .write_all(request)
        .await
        .map_err(Failure::Unanswered)?;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= MAX_HEAD {
                return Err(Failure::Other(format!(
                    "answer head longer than {MAX_HEAD} bytes"
                )));
            }
            buf.reserve(buf.len());
        }
        let n = match stream.read_buf(&mut buf).await {
            Ok(n) => n,
            Err(e) if buf.is_empty() => return Err(Failure::Unanswered(e)),
            Err(e) => return Err(Failure::Other(format!("answer cut off: {e}"))),
        };
        if n == 0 {
            return Err(if buf.is_empty() {
                Failure::Unanswered(std::io::ErrorKind::UnexpectedEof.into())
            } else {
                Failure::Other("connection closed in the middle of the answer".into())
            });
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(Failure::Other(format!("not an HTTP answer: {e}"))),
        };
        let status = resp.code.unwrap_or(0);
        let mut reusable = resp.version == Some(1);
        let mut length: Option<u64> = None;
        for h in resp.headers.iter() {
            let value = std::str::from_utf8(h.value).unwrap_or("").trim();
            if h.name.eq_ignore_ascii_case("connection") {
                reusable &= !value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("close"));
            } else if h.name.eq_ignore_ascii_case("content-length") {
                length = value.parse().ok();
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // Chunked bodies are not decoded: the status is all a probe needs.
                reusable = false;
            }
        }
        if matches!(status, 100..=199 | 204 | 304) {
            length = Some(0);
        }
        let have = (buf.len() - head_len) as u64;
        let Some(length) = length.filter(|&l| reusable && l >= have && l <= MAX_BODY) else {
            return Ok((status, false));
        };
        let mut rest = length - have;
        while rest > 0 {
            buf.clear();
            let n = (&mut *stream)
                .take(rest)
                .read_buf(&mut buf)
                .await
                .unwrap_or(0);
            if n == 0 {
                return Ok((status, false));
            }
            rest -= n as u64;
        }
        return Ok((status, true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn requests_name_path_query_and_host() {
        let t = Target::parse("http://127.0.0.1:18789/readyz?deep=1").unwrap();
        assert_eq!(t.authority, "127.0.0.1:18789");
        let req = String::from_utf8(t.request.to_vec()).unwrap();
        assert!(req.starts_with("GET /readyz?deep=1 HTTP/1.1\r\nHost: 127.0.0.1:18789\r\n"));
        assert!(req.ends_with("\r\n\r\n"));
        let t = Target::parse("http://[::1]/healthz").unwrap();
        assert_eq!(t.authority, "[::1]:80");
        assert!(Target::parse("https://127.0.0.1/healthz").is_err());
    }

    /// A server that answers each connection's requests with the given answers in turn, then closes
    /// it; returns its address and a count of the connections it took.
    async fn server(
        answers: Vec<&'static str>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut stream = tokio::io::BufReader::new(stream);
                    for answer in answers {
                        // Read one request head.
                        loop {
                            let mut line = String::new();
                            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        stream.get_mut().write_all(answer.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (addr, conns)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    #[tokio::test]
    async fn keeps_the_connection_between_probes() {
        let (addr, conns) = server(vec![OK, OK, OK]).await;
        let mut p = Prober::new(
            &format!("http://{addr}/readyz"),
            &format!("http://{addr}/healthz"),
        );
        let t = Duration::from_secs(5);
        p.ready(t, &mut ()).await.unwrap();
        p.live(t, &mut ()).await.unwrap();
        p.live(t, &mut ()).await.unwrap();
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A check that refuses every address, and counts the calls.
    struct Refuse(usize);

    impl Verify for Refuse {
        async fn verify(&mut self, peer: SocketAddr) -> Result<(), String> {
            self.0 += 1;
            Err(format!("{peer} is not ours"))
        }
    }

    #[tokio::test]
    async fn a_new_connection_counts_only_once_verified() {
        let (addr, _) = server(vec![OK, OK]).await;
        let url = format!("http://{addr}/healthz");
        let mut p = Prober::new(&url, &url);
        let t = Duration::from_secs(5);
        let mut refuse = Refuse(0);
        let e = p.live(t, &mut refuse).await.unwrap_err();
        assert!(e.ends_with(&format!("{addr} is not ours")), "{e}");
        assert!(p.conn.is_none(), "a refused connection is not kept");
        // Accepted once, the kept connection is not asked about again.
        let mut calls = 0;
        struct Count<'a>(&'a mut usize);
        impl Verify for Count<'_> {
            async fn verify(&mut self, _peer: SocketAddr) -> Result<(), String> {
                *self.0 += 1;
                Ok(())
            }
        }
        p.live(t, &mut Count(&mut calls)).await.unwrap();
        p.live(t, &mut Count(&mut calls)).await.unwrap();
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced() {
        // One answer per connection, then the server closes it, as Node does after keepAliveTimeout.
        let (addr, conns) = server(vec![OK]).await;
        let url = format!("http://{addr}/healthz");
        let mut p = Prober::new(&url, &url);
        let t = Duration::from_secs(5);
        for _ in 0..3 {
            p.live(t, &mut ()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn no_request_goes_into_a_connection_the_server_closed() {
        // After each answer the server shuts its sending side, as a server closing an idle
        // connection does, but goes on reading: a request written into the closing connection
        // would be counted.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut stream = tokio::io::BufReader::new(stream);
                    let mut line = String::new();
                    while stream.read_line(&mut line).await.unwrap_or(0) > 0 {
                        if line == "\r\n" {
                            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let _ = stream.get_mut().write_all(OK.as_bytes()).await;
                            let _ = stream.get_mut().shutdown().await;
                        }
                        line.clear();
                    }
                });
            }
        });
        let url = format!("http://{addr}/healthz");
        let mut p = Prober::new(&url, &url);
        let t = Duration::from_secs(5);
        for _ in 0..3 {
            p.live(t, &mut ()).await.unwrap();
            // The next probe comes once the server's end-of-file has arrived.
            let (_, kept) = p.conn.as_ref().expect("a kept connection");
            kept.readable().await.unwrap();
        }
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn non_2xx_chunked_and_close_answers() {
        let (addr, _) = server(vec![
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ])
        .await;
        let url = format!("http://{addr}/healthz");
        let mut p = Prober::new(&url, &url);
        let t = Duration::from_secs(5);
        let e = p.live(t, &mut ()).await.unwrap_err();
        assert!(e.ends_with("HTTP 503"), "{e}");
        assert!(p.conn.is_some(), "a 503 with a length keeps the connection");
        p.live(t, &mut ()).await.unwrap();
        assert!(p.conn.is_none(), "a chunked answer is not read through");
    }

    #[tokio::test]
    async fn garbage_and_refusal_are_errors() {
        let (addr, _) = server(vec!["SSH-2.0-OpenSSH\r\n\r\n"]).await;
        let url = format!("http://{addr}/healthz");
        let e = Prober::new(&url, &url)
            .live(Duration::from_secs(5), &mut ())
            .await
            .unwrap_err();
        assert!(e.contains("not an HTTP answer"), "{e}");

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/healthz");
        let e = Prober::new(&url, &url)
            .live(Duration::from_secs(5), &mut ())
            .await
            .unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
    }
}
