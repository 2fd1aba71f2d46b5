//! The gRPC contract compiled from `proto/openclaw/supervisor/v1/supervisor.proto`, and the
//! conversions between the library's own types and its messages.

pub mod authority;
pub mod calls;
pub mod client;
pub mod runtimes;
pub mod server;
pub mod socket;

/// Generated messages, client and server of `openclaw.supervisor.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("openclaw.supervisor.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/supervisor_descriptor.bin"));
}
