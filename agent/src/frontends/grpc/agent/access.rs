//! Guest tokens.

use felhom_proto::agent::v1 as pb;
use secrecy::ExposeSecret;
use tonic::{Request, Response};

use super::{Reply, operator};
use crate::capabilities::Capabilities;
use crate::frontends::grpc::status;
use crate::infra::state::MintedToken;

fn token_reply(minted: MintedToken) -> pb::GuestToken {
    pb::GuestToken {
        vmid: minted.vmid,
        // The only time the token is shown.
        token: minted.token.expose_secret().to_owned(),
        token_id: minted.id.to_string(),
    }
}

pub(super) async fn mint(
    caps: &Capabilities,
    r: Request<pb::GuestTokenRequest>,
) -> Reply<pb::GuestToken> {
    let actor = operator(&r);
    let minted = caps.tokens.mint(actor, r.into_inner().vmid).await;
    Ok(Response::new(token_reply(
        minted.map_err(|e| status::access(&e))?,
    )))
}

pub(super) async fn rotate(
    caps: &Capabilities,
    r: Request<pb::GuestTokenRequest>,
) -> Reply<pb::GuestToken> {
    let actor = operator(&r);
    let minted = caps.tokens.rotate(actor, r.into_inner().vmid).await;
    Ok(Response::new(token_reply(
        minted.map_err(|e| status::access(&e))?,
    )))
}

pub(super) async fn revoke(
    caps: &Capabilities,
    r: Request<pb::GuestTokenRequest>,
) -> Reply<pb::RevokeGuestTokenResponse> {
    let actor = operator(&r);
    let revoked = caps
        .tokens
        .revoke(actor, r.into_inner().vmid)
        .await
        .map_err(|e| status::access(&e))?;
    Ok(Response::new(pb::RevokeGuestTokenResponse { revoked }))
}

pub(super) async fn list(
    caps: &Capabilities,
    _r: Request<pb::ListGuestTokensRequest>,
) -> Reply<pb::ListGuestTokensResponse> {
    let list = caps.tokens.list().await.map_err(|e| status::access(&e))?;
    Ok(Response::new(pb::ListGuestTokensResponse {
        tokens: list
            .into_iter()
            .map(|t| pb::GuestTokenInfo {
                vmid: t.vmid,
                token_id: t.id.to_string(),
                created_at: t.created_at.to_string(),
            })
            .collect(),
    }))
}
