//! Compile proto/ with protox (a pure-Rust protobuf compiler: no protoc to
//! download) and generate the tonic services and prost messages. One encoded
//! descriptor set per package is written next to the code for gRPC server
//! reflection, so the server lists exactly the services it serves.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["recoup/v1/recoup.proto", "recoup/bench/v1/echo.proto", "hyperswitch/recovery_decider.proto", "hyperswitch/trainer.proto"];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    for (package, file) in [("recoup.v1", "recoup"), ("recoup.bench.v1", "bench"), ("decider", "decider"), ("trainer", "trainer")] {
        let files = fds.file.iter().filter(|f| f.package() == package).cloned().collect();
        std::fs::write(out.join(format!("{file}_descriptor.bin")), prost_types::FileDescriptorSet { file: files }.encode_to_vec())?;
    }
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
