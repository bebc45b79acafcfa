//! Compile proto/ with protox (a pure-Rust protobuf compiler: no protoc to
//! download) and generate the tonic services and prost messages. One encoded
//! descriptor set per package is written next to the code for gRPC server
//! reflection, so the server lists exactly the services it serves.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos =
        ["recoup/v1/recoup.proto", "recoup/bench/v1/echo.proto", "hyperswitch/recovery_decider.proto", "hyperswitch/trainer.proto"];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    for (package, file) in [("recoup.v1", "recoup"), ("recoup.bench.v1", "bench"), ("decider", "decider"), ("trainer", "trainer")] {
        // The package's files and, transitively, the files they import (google/protobuf/timestamp.proto):
        // reflection clients resolve every dependency through the server.
        let mut names: Vec<String> = fds.file.iter().filter(|f| f.package() == package).map(|f| f.name().to_string()).collect();
        let mut i = 0;
        while i < names.len() {
            let deps = fds.file.iter().find(|f| f.name() == names[i]).map(|f| f.dependency.clone()).unwrap_or_default();
            names.extend(deps.into_iter().filter(|d| !names.contains(d)).collect::<Vec<_>>());
            i += 1;
        }
        let files = fds.file.iter().filter(|f| names.iter().any(|n| n == f.name())).cloned().collect();
        std::fs::write(out.join(format!("{file}_descriptor.bin")), prost_types::FileDescriptorSet { file: files }.encode_to_vec())?;
    }
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
