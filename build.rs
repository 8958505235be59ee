//! Compiles KubeVirt's hook-sidecar protocol (`proto/kubevirt/hooks/*.proto`) into the
//! gRPC server code of `src/kubevirt/`. `protox` parses the .proto files in Rust, so the
//! build needs no `protoc` on the machine or in the image.

const PROTOS: [&str; 3] = [
    "proto/kubevirt/hooks/info.proto",
    "proto/kubevirt/hooks/v1alpha2.proto",
    "proto/kubevirt/hooks/v1alpha3.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
