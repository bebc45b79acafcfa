//! Compile proto/ with protox (a pure-Rust protobuf compiler: no protoc to
//! download) and generate the tonic services and prost messages. One encoded
//! descriptor set per package is written next to the code for gRPC server
//! reflection, so the server lists exactly the services it serves.

use prost::Message;

/// The messages of a `DecideRequest`, read from JSON by `recoup decide`.
const JSON_REQUEST: [&str; 7] = [
    "recoup.v1.DecideRequest",
    "recoup.v1.Payment",
    "recoup.v1.Attempt",
    "recoup.v1.PastPayment",
    "recoup.v1.PastAttempt",
    "recoup.v1.Ask",
    "recoup.v1.Constraints",
];

/// Their timestamp fields.
const JSON_TIMES: [&str; 6] = [
    "recoup.v1.DecideRequest.now",
    "recoup.v1.Attempt.attempted_at",
    "recoup.v1.PastAttempt.attempted_at",
    "recoup.v1.Ask.sent_at",
    "recoup.v1.Constraints.earliest",
    "recoup.v1.Constraints.latest",
];

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
    // `recoup decide` reads a DecideRequest as JSON: serde derives on the request's
    // messages, so the CLI's JSON is the proto's and is never written again by hand.
    // Timestamps are RFC 3339 strings (`api::json`); `past_payments` also takes the
    // older bare form, a list of attempt lists.
    let mut builder = tonic_prost_build::configure().build_client(true).build_server(true);
    for message in JSON_REQUEST {
        builder = builder.type_attribute(message, "#[derive(serde::Deserialize)] #[serde(default, deny_unknown_fields)]");
    }
    for field in JSON_TIMES {
        builder = builder.field_attribute(field, "#[serde(with = \"crate::api::json::time\")]");
    }
    builder = builder
        .field_attribute("recoup.v1.DecideRequest.past_payments", "#[serde(deserialize_with = \"crate::api::json::past_payments\")]");
    builder.compile_fds(fds)?;
    Ok(())
}
