//! Connecting to the daemon, for openclawctl and any Rust client: over its control socket, or over
//! its TCP listener (`--tcp`) with the bearer token of a token file.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

use super::v1::supervisor_service_client::SupervisorServiceClient;

/// Where the daemon answers.
#[derive(Debug, Clone)]
pub enum Target {
    /// Its Unix control socket.
    Socket(PathBuf),
    /// Its TCP listener, e.g. `http://127.0.0.1:7777`, with the token file whose first line is
    /// the token the daemon's `--token-file` holds.
    Tcp {
        /// The URL.
        endpoint: String,
        /// The token file.
        token_file: PathBuf,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Socket(p) => write!(f, "{}", p.display()),
            Target::Tcp { endpoint, .. } => write!(f, "{endpoint}"),
        }
    }
}

/// Adds `authorization: Bearer TOKEN` to every call (nothing on the socket).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A client of the supervisor service, on either kind of [`Target`].
pub type Client = SupervisorServiceClient<InterceptedService<Channel, Bearer>>;

/// Whether a call's error means the daemon was not there to answer it (UNAVAILABLE, in gRPC's
/// terms): the code itself, or a connection the daemon closed under it. A daemon that re-executes
/// or stops closes its connections gracefully (HTTP/2 GOAWAY with NO_ERROR, then the socket);
/// tonic reports a call caught by that as INTERNAL ("h2 protocol error: GoAway NO_ERROR"),
/// CANCELLED ("connection closed") or UNKNOWN (a broken pipe), where gRPC's own clients (Go,
/// Java, C core) say UNAVAILABLE, and so does this.
pub fn unavailable(status: &tonic::Status) -> bool {
    if status.code() == tonic::Code::Unavailable {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_canceled() || h.is_closed() || h.is_incomplete_message() {
                return true;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof
            ) {
                return true;
            }
        }
        if let Some(h) = e.downcast_ref::<h2::Error>() {
            if h.is_go_away() && h.reason() == Some(h2::Reason::NO_ERROR) {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// Connects to the daemon on the Unix socket `path`. The error says which socket was tried and how
/// to start the daemon.
pub async fn connect(path: &Path) -> Result<Client, String> {
    connect_to(&Target::Socket(path.to_path_buf())).await
}

/// Connects to the daemon at `target`. The error names the socket or endpoint tried (and the
/// token file), and what to do.
pub async fn connect_to(target: &Target) -> Result<Client, String> {
    match target {
        Target::Socket(path) => Ok(SupervisorServiceClient::with_interceptor(
            channel(path).await?,
            Bearer(None),
        )),
        Target::Tcp {
            endpoint,
            token_file,
        } => {
            let token = super::server::read_token(token_file)
                .map_err(|e| format!("cannot read the token file {}: {e}", token_file.display()))?;
            if token.is_empty() {
                return Err(format!("the token file {} is empty", token_file.display()));
            }
            let value = format!("Bearer {token}").parse().map_err(|_| {
                format!(
                    "the token in {} is not a valid header value (printable ASCII only)",
                    token_file.display()
                )
            })?;
            let channel = tcp_channel(endpoint).await?;
            Ok(SupervisorServiceClient::with_interceptor(
                channel,
                Bearer(Some(value)),
            ))
        }
    }
}

/// A channel to the daemon's TCP listener at `endpoint` (`http://HOST:PORT`).
pub async fn tcp_channel(endpoint: &str) -> Result<Channel, String> {
    Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| format!("--endpoint {endpoint:?} is not a URL like http://127.0.0.1:PORT: {e}"))?
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(4 << 20))
        .connect()
        .await
        .map_err(|e| {
            format!(
                "cannot reach openclaw-supervisord at {endpoint}: {}\nis the daemon running with `--tcp ADDR --token-file FILE` on that address?",
                source_of(&e)
            )
        })
}

/// A channel to the daemon's Unix socket `path`, for any of the services it serves (the supervisor,
/// gRPC health, reflection). Errors as [`connect`].
pub async fn channel(path: &Path) -> Result<Channel, String> {
    let socket: PathBuf = path.to_path_buf();
    // The URI is required by tonic but unused: the connector below always dials the socket.
    let channel = Endpoint::try_from("http://[::]:50051")
        .map_err(|e| e.to_string())?
        // A status of hundreds of instances is larger than HTTP/2's default 64 KB window: without
        // a larger one, the answer stalls for a window update round trip.
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(4 << 20))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| {
            format!(
                "cannot reach openclaw-supervisord on {}: {}\nstart it with `openclaw-supervisord --config-dir DIR --socket {}` (or `systemctl start openclaw-supervisor`), or point --socket / OPENCLAW_SUPERVISOR_SOCKET at its socket",
                path.display(),
                source_of(&e),
                path.display()
            )
        })?;
    Ok(channel)
}

fn source_of(e: &dyn std::error::Error) -> String {
    let mut last = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        last = s.to_string();
        src = s.source();
    }
    last
}
