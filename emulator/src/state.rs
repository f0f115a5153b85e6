//! State shared by both servers and every provider module.

use std::sync::Mutex;

use crate::faults::FaultState;
use crate::s3::Store;
use crate::{Config, RequestRecord};

/// Everything the handlers share, behind an `Arc`.
pub struct Shared {
    /// The configuration the emulator started with (`faults` there is the initial value; the
    /// faults in force are in [`Shared::faults`]).
    pub config: Config,
    pub faults: Mutex<FaultState>,
    /// Every request, oldest first.
    pub log: Mutex<Vec<RequestRecord>>,
    /// The S3-compatible object store.
    pub store: Store,
    /// Teleport's captures.
    pub teleport: crate::teleport::TeleportState,
    /// Uplift's reservations.
    pub uplift: crate::uplift::UpliftState,
    /// TruVideo's uploads.
    pub truvideo: crate::truvideo::TruvideoState,
    /// Apertur's sessions, destinations and counters.
    pub apertur: crate::apertur::AperturState,
    /// Tokens handed out by the sign-in endpoints.
    pub signin: crate::signin::SignInState,
    /// Request body bytes received over time (both servers).
    pub received: crate::meter::ReceiveMeter,
    /// The same, by the S3 store only (object data, no API calls).
    pub received_s3: crate::meter::ReceiveMeter,
    /// The link every object upload shares (`Faults::total_bandwidth_bps`).
    pub link: crate::pace::TotalCap,
    /// Requests being handled by the API server, now and at most (see [`crate::meter::InFlight`]).
    pub in_flight_api: crate::meter::InFlight,
    /// The same for the S3 store.
    pub in_flight_s3: crate::meter::InFlight,
}

impl Shared {
    pub fn new(config: Config, s3_base_url: String) -> Self {
        Shared {
            faults: Mutex::new(FaultState::new(config.faults.clone())),
            log: Mutex::new(Vec::new()),
            store: Store::new(s3_base_url, config.state_dir.clone(), config.url_ttl, config.min_part_size),
            teleport: Default::default(),
            uplift: Default::default(),
            truvideo: Default::default(),
            apertur: Default::default(),
            signin: Default::default(),
            received: Default::default(),
            received_s3: Default::default(),
            link: Default::default(),
            in_flight_api: Default::default(),
            in_flight_s3: Default::default(),
            config,
        }
    }

    /// The pacing of an object upload's body: the per-connection and total caps in force.
    pub fn pace(&self) -> crate::pace::Pace<'_> {
        let (per_connection, total) = {
            let f = self.faults.lock().unwrap();
            (f.bandwidth_bps(), f.total_bandwidth_bps())
        };
        crate::pace::Pace::new(per_connection, &self.link, total)
    }

    /// Appends a request to the log.
    pub fn record(&self, server: &str, method: &str, path: &str, status: u16) {
        self.log.lock().unwrap().push(RequestRecord {
            server: server.to_string(),
            method: method.to_string(),
            path: path.to_string(),
            status,
        });
    }
}
