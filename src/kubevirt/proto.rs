//! The generated code of KubeVirt's hook and plugin protocols (`proto/kubevirt/hooks/`).

#![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]

pub mod info {
    tonic::include_proto!("kubevirt.hooks.info");
}

pub mod v1alpha2 {
    tonic::include_proto!("kubevirt.hooks.v1alpha2");
}

pub mod v1alpha3 {
    tonic::include_proto!("kubevirt.hooks.v1alpha3");
}

pub mod plugins {
    tonic::include_proto!("kubevirt.hooks.plugins.v1alpha1");
}
