//! The local API gateway embedded in the agent daemon, as seen by the rest of the agent.
//!
//! The daemon starts the gateway (crate `felhom-localapi-gateway`) after the gRPC socket is
//! bound and puts it into the shared [`GatewaySlot`]; the operator RPCs `GetLocalApiPins` and
//! `RotateLocalApiCertificate` read it from there, and the daemon takes it out again on
//! shutdown. An empty slot means the gateway is off (`[local_api] listen` is empty) or already
//! stopped.

use std::sync::{Arc, Mutex, PoisonError};

use felhom_localapi_gateway::{Gateway, Pins, RotateError};

/// What the operator RPCs report about the running gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPins {
    pub pins: Pins,
    /// Bound addresses ("10.0.0.1:8443").
    pub listen: Vec<String>,
}

/// Why a gateway operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewaySlotError {
    #[error("the local API gateway is off (set [local_api] listen in the agent config)")]
    Off,
    #[error("cannot rotate the local API certificate")]
    Rotate(#[source] RotateError),
}

/// The running gateway, shared between the daemon and the operator service.
#[derive(Clone, Default)]
pub struct GatewaySlot(Arc<Mutex<Option<Gateway>>>);

impl std::fmt::Debug for GatewaySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let running = self.lock().is_some();
        f.debug_struct("GatewaySlot")
            .field("running", &running)
            .finish()
    }
}

impl GatewaySlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Gateway>> {
        // A panic while holding the lock cannot leave the Option half-updated.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a started gateway in the slot (a previous one would be dropped, which stops it).
    pub fn set(&self, gateway: Gateway) {
        *self.lock() = Some(gateway);
    }

    /// Takes the gateway out (for shutdown).
    pub fn take(&self) -> Option<Gateway> {
        self.lock().take()
    }

    /// Current pins and bound addresses.
    pub fn pins(&self) -> Result<GatewayPins, GatewaySlotError> {
        let guard = self.lock();
        let gw = guard.as_ref().ok_or(GatewaySlotError::Off)?;
        Ok(GatewayPins {
            pins: gw.pins(),
            listen: listen_of(gw),
        })
    }

    /// Rotates the certificate; new connections get the new one at once.
    pub fn rotate(&self) -> Result<GatewayPins, GatewaySlotError> {
        let guard = self.lock();
        let gw = guard.as_ref().ok_or(GatewaySlotError::Off)?;
        let pins = gw.rotate_certificate().map_err(GatewaySlotError::Rotate)?;
        Ok(GatewayPins {
            pins,
            listen: listen_of(gw),
        })
    }

    /// Stops the gateway gracefully if it runs.
    pub async fn shutdown(&self) {
        let gateway = self.take();
        if let Some(gw) = gateway {
            tracing::info!("stopping the local API gateway");
            gw.shutdown().await;
        }
    }
}

fn listen_of(gw: &Gateway) -> Vec<String> {
    gw.local_addrs().iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_slot_reports_the_gateway_off() {
        let slot = GatewaySlot::default();
        assert_eq!(
            slot.pins().unwrap_err().to_string(),
            "the local API gateway is off (set [local_api] listen in the agent config)"
        );
        assert!(matches!(slot.rotate(), Err(GatewaySlotError::Off)));
    }
}
