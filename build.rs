//! Compiles the gRPC contract in `proto/` with protox (a pure-Rust protobuf compiler), so building the
//! crate needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/openclaw/supervisor/v1/supervisor.proto";
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile([proto], ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("supervisor_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    // The state a daemon hands to the program it execs in its place: messages only, and not in
    // the API's descriptor set (reflection does not list it).
    let handover = protox::compile(
        ["proto/openclaw/supervisor/handover/v1/handover.proto"],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .compile_fds(handover)?;
    Ok(())
}
