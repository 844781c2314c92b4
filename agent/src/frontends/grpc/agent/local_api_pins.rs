//! The embedded local-API gateway's certificate pins (the gateway is a front end; this only
//! reads or rotates its certificate and audits the rotation).

use felhom_proto::agent::v1 as pb;
use tonic::{Request, Response, Status};

use super::{Reply, operator};
use crate::capabilities::Capabilities;
use crate::frontends::grpc::status;
use crate::frontends::local_api_gateway::{GatewayPins, GatewaySlot};

fn pins_reply(p: GatewayPins) -> pb::LocalApiPins {
    pb::LocalApiPins {
        leaf_sha256_hex: p.pins.leaf_sha256_hex,
        spki_sha256_base64: p.pins.spki_sha256_base64,
        listen: p.listen,
    }
}

pub(super) async fn get(
    gateway: &GatewaySlot,
    _r: Request<pb::GetLocalApiPinsRequest>,
) -> Reply<pb::LocalApiPins> {
    let pins = gateway.pins().map_err(|e| status::gateway(&e))?;
    Ok(Response::new(pins_reply(pins)))
}

pub(super) async fn rotate(
    caps: &Capabilities,
    gateway: &GatewaySlot,
    r: Request<pb::RotateLocalApiCertificateRequest>,
) -> Reply<pb::LocalApiPins> {
    let actor = operator(&r);
    let slot = gateway.clone();
    // Key generation and file writes: off the async workers.
    let pins = tokio::task::spawn_blocking(move || slot.rotate())
        .await
        .map_err(|e| Status::internal(format!("certificate rotation task failed: {e}")))?
        .map_err(|e| status::gateway(&e))?;
    caps.records
        .certificate_rotated(actor, &pins.pins.leaf_sha256_hex)
        .await;
    Ok(Response::new(pins_reply(pins)))
}
