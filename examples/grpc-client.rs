//! A minimal third-party client of openclaw-supervisord's gRPC API: lists the instances and
//! restarts one. Run it against a daemon:
//!
//! ```sh
//! cargo run --example grpc-client -- /run/openclaw-supervisor/supervisor.sock          # status
//! cargo run --example grpc-client -- /run/openclaw-supervisor/supervisor.sock rescue   # restart rescue
//! ```
//!
//! To copy it into your own crate: depend on tonic, tonic-prost, prost, tokio, tower and
//! hyper-util, and generate the client from `proto/openclaw/supervisor/v1/supervisor.proto` in your
//! `build.rs` with `tonic_prost_build::compile_protos(...)`; then replace the `use` of this crate's
//! generated module below with `tonic::include_proto!("openclaw.supervisor.v1")`. Everything else
//! stays as it is. Over TCP (`openclaw-supervisord --tcp ... --token-file ...`), connect with
//! `Endpoint::from_shared("http://127.0.0.1:PORT")` instead and add the metadata
//! `authorization: Bearer <token>` to every request.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use openclaw_supervisor::api::v1::{
    supervisor_service_client::SupervisorServiceClient, InstanceState, ListInstancesRequest,
    RestartInstanceRequest,
};
use tonic::transport::{Endpoint, Uri};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let socket = PathBuf::from(
        args.next()
            .ok_or("usage: grpc-client SOCKET [INSTANCE-TO-RESTART]")?,
    );
    let restart = args.next();

    // gRPC over a Unix socket: the URI is required by tonic but never dialled.
    let channel = Endpoint::try_from("http://localhost")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await?;
    let mut client = SupervisorServiceClient::new(channel);

    if let Some(name) = restart {
        // Waits until the instance is ready again; FAILED_PRECONDITION carries the reason if not.
        match client
            .restart_instance(RestartInstanceRequest { name: name.clone() })
            .await
        {
            Ok(i) => println!("{name}: restarted, pid {}", i.into_inner().pid),
            Err(status) => {
                eprintln!("{name}: {:?}: {}", status.code(), status.message());
                std::process::exit(1);
            }
        }
    }

    let list = client
        .list_instances(ListInstancesRequest { names: vec![] })
        .await?
        .into_inner();
    for i in list.instances {
        let state = InstanceState::try_from(i.state).unwrap_or(InstanceState::Unspecified);
        println!(
            "{:<16} {:<10} pid {:<8} port {:<6} restarts {}",
            i.name,
            state
                .as_str_name()
                .trim_start_matches("INSTANCE_STATE_")
                .to_lowercase(),
            i.pid,
            i.port,
            i.restarts
        );
    }
    Ok(())
}
