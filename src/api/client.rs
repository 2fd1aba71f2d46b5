//! Connecting to the daemon's control socket, for openclawctl and any Rust client.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use super::v1::supervisor_service_client::SupervisorServiceClient;

/// Connects to the daemon on the Unix socket `path`. The error says which socket was tried and how
/// to start the daemon.
pub async fn connect(path: &Path) -> Result<SupervisorServiceClient<Channel>, String> {
    Ok(SupervisorServiceClient::new(channel(path).await?))
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
