//! The supervisor's host networking: set up from the records at adoption.

use super::{allocation, Supervisor};
use crate::network::{Allocation, Network};
use crate::store::ContainerRecord;
use std::sync::Arc;

impl Supervisor {
    /// Host networking, once `adopt` has set it up (None when disabled).
    pub fn network(&self) -> Option<&Arc<Network>> {
        self.network.get()
    }

    /// Sets up the network from the records (blocking): default deny is in
    /// place before the first container of this run gets an address.
    pub(super) fn setup_network(&self, recs: &[ContainerRecord]) -> anyhow::Result<()> {
        let Some(s) = self.net_settings.clone() else {
            return Ok(());
        };
        let existing: Vec<(String, Allocation)> = recs
            .iter()
            .map(|r| (r.spec.name.clone(), allocation(r)))
            .collect();
        let n = Network::setup(s, &existing, &self.paths.state)?;
        let _ = self.network.set(Arc::new(n));
        Ok(())
    }
}
