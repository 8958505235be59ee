//! Compiles KubeVirt's hook-sidecar and plugin protocols (`proto/kubevirt/hooks/`) into the
//! gRPC server code of `src/kubevirt/`. `protox` parses the .proto files in Rust, so the
//! build needs no `protoc` on the machine or in the image.
//!
//! With the `swagger-ui` feature, also extracts the few files `/docs/` serves from the
//! Swagger UI release vendored in `utoipa-swagger-ui-vendored` (nothing is downloaded).

const PROTOS: [&str; 4] = [
    "proto/kubevirt/hooks/info.proto",
    "proto/kubevirt/hooks/v1alpha2.proto",
    "proto/kubevirt/hooks/v1alpha3.proto",
    "proto/kubevirt/hooks/plugins/v1alpha1/api.proto",
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
    #[cfg(feature = "swagger-ui")]
    extract_swagger_ui()?;
    Ok(())
}

/// The files of the Swagger UI release that `src/http/docs.rs` embeds.
#[cfg(feature = "swagger-ui")]
const SWAGGER_UI_FILES: [&str; 5] = [
    "swagger-ui.css",
    "index.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "favicon-32x32.png",
];

#[cfg(feature = "swagger-ui")]
fn extract_swagger_ui() -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Read;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("swagger-ui");
    std::fs::create_dir_all(&out)?;
    let release = std::io::Cursor::new(utoipa_swagger_ui_vendored::SWAGGER_UI_VENDORED);
    let mut archive = zip::ZipArchive::new(release)?;
    for name in SWAGGER_UI_FILES {
        let path = (0..archive.len())
            .filter_map(|i| archive.name_for_index(i).map(str::to_owned))
            .find(|path| path.ends_with(&format!("/dist/{name}")))
            .ok_or_else(|| format!("the vendored Swagger UI has no dist/{name}"))?;
        let mut bytes = Vec::new();
        archive.by_name(&path)?.read_to_end(&mut bytes)?;
        std::fs::write(out.join(name), bytes)?;
    }
    Ok(())
}
