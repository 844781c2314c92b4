//! gRPC contracts of the felhom host agent.
//!
//! Three versioned services, each in its own package:
//! - `felhom.helper.v1.Helper`: the root helper's closed set of privileged operations.
//! - `felhom.agent.v1.Agent`: the operator surface of the agent.
//! - `felhom.agent.v1.LocalApi`: what the local-API gateway calls on behalf of a guest.
//!
//! The `.proto` files are compiled at build time with `protox` (pure Rust; no system `protoc`).
//! [`FILE_DESCRIPTOR_SET`] is the encoded descriptor set of all of them, for gRPC server
//! reflection. A service lists only RPCs that have an implementation behind them.

/// Encoded `FileDescriptorSet` of every felhom proto, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/felhom_descriptor.bin"));

/// `felhom.helper.v1`: the root helper.
pub mod helper {
    /// Version 1 of the helper contract.
    pub mod v1 {
        #![allow(clippy::all, missing_docs, rust_2018_idioms)]
        tonic::include_proto!("felhom.helper.v1");
    }
}

/// `felhom.agent.v1`: the agent's operator surface and the guests' local API.
pub mod agent {
    /// Version 1 of the agent contracts.
    pub mod v1 {
        #![allow(clippy::all, missing_docs, rust_2018_idioms)]
        tonic::include_proto!("felhom.agent.v1");
    }
}

/// Fully qualified names of the gRPC reflection services.
pub const REFLECTION_SERVICES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The reflection services (v1 and v1alpha, so old and new `grpcurl` both work) for a server
/// that serves `services`: they advertise exactly those plus themselves, and can describe every
/// felhom message.
pub fn reflection(
    services: &[&str],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            );
        for name in services.iter().chain(REFLECTION_SERVICES.iter()) {
            b = b.with_service_name(*name);
        }
        b
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// The guests' bearer tokens as they travel: `fhg_` and 43 unpadded base64url characters
/// (32 random bytes). The agent mints them; the gateway refuses anything else before calling
/// the agent, so a made-up token never costs more than this check.
pub mod guest_token {
    /// Every guest token starts with this.
    pub const PREFIX: &str = "fhg_";
    /// Length of the unpadded base64url body after [`PREFIX`] (32 bytes).
    pub const BODY_LEN: usize = 43;

    /// Whether `presented` has the shape of a guest token (says nothing about validity).
    pub fn is_well_formed(presented: &str) -> bool {
        presented.strip_prefix(PREFIX).is_some_and(|body| {
            body.len() == BODY_LEN
                && body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_minted_shape_is_well_formed() {
            let body = &"A-_z".repeat(11)[..BODY_LEN];
            assert!(is_well_formed(&format!("{PREFIX}{body}")));
        }

        #[test]
        fn other_prefixes_lengths_and_characters_are_not() {
            let body = "a".repeat(BODY_LEN);
            for bad in [
                format!("fhx_{body}"),
                format!("{PREFIX}{}", &body[1..]),
                format!("{PREFIX}{body}a"),
                format!("{PREFIX}{}=", &body[1..]),
                format!("{PREFIX}{}+", &body[1..]),
                String::new(),
            ] {
                assert!(!is_well_formed(&bad), "{bad}");
            }
        }
    }
}
