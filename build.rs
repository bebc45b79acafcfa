//! Compile proto/ with protox (a pure-Rust protobuf compiler: no protoc to
//! download) and generate the tonic services and prost messages. The encoded
//! descriptor sets are written next to the code for gRPC server reflection:
//! one for the services always served, one for the benchmark echo service
//! (registered only when it is served).

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["recoup/v1/recoup.proto", "recoup/bench/v1/echo.proto"];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let (bench, served): (Vec<_>, Vec<_>) = fds.file.iter().cloned().partition(|f| f.package() == "recoup.bench.v1");
    let set = |file| prost_types::FileDescriptorSet { file }.encode_to_vec();
    std::fs::write(out.join("recoup_descriptor.bin"), set(served))?;
    std::fs::write(out.join("bench_descriptor.bin"), set(bench))?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
