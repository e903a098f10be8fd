//! A container's health, as its HTTP checks found it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No check configured.
    #[default]
    None,
    /// Checked, not yet answered.
    Starting,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    /// Failed checks in a row.
    pub failures: u32,
}

impl Health {
    /// Before the first check: `starting` when there is a check, else `none`.
    pub fn initial(has_check: bool) -> Health {
        Health {
            status: match has_check {
                true => HealthStatus::Starting,
                false => HealthStatus::None,
            },
            failures: 0,
        }
    }

    /// Records one check; true when this one made the container unhealthy.
    pub fn record(&mut self, ok: bool, retries: u32) -> bool {
        if ok {
            *self = Health {
                status: HealthStatus::Healthy,
                failures: 0,
            };
            return false;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= retries && self.status != HealthStatus::Unhealthy {
            self.status = HealthStatus::Unhealthy;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_after_retries_once_and_healthy_again() {
        let mut h = Health::initial(true);
        assert_eq!(h.status, HealthStatus::Starting);
        assert!(!h.record(false, 3));
        assert!(!h.record(false, 3));
        assert!(h.record(false, 3), "third failure turns it unhealthy");
        assert!(!h.record(false, 3), "announced once");
        assert_eq!((h.status, h.failures), (HealthStatus::Unhealthy, 4));
        assert!(!h.record(true, 3));
        assert_eq!(
            h,
            Health {
                status: HealthStatus::Healthy,
                failures: 0
            }
        );
    }
}
