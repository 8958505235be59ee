//! Shared by the injector's unit tests: settings, and the fixtures of tests/inject/.

use serde_json::Value;

use crate::config::{ImageByDigest, InjectFile, InjectSettings};

pub(crate) const IMAGE: &str = "registry.example/virt-probe-gateway@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The defaults, with [`IMAGE`].
pub(crate) fn settings() -> InjectSettings {
    InjectSettings::resolve(
        InjectFile::default(),
        InjectFile {
            image: ImageByDigest::parse(IMAGE).ok(),
            ..InjectFile::default()
        },
    )
    .unwrap()
}

/// A fixture of tests/inject/fixtures/.
pub(crate) fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/inject/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}
