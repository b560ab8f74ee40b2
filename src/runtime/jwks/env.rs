//! The running proxy's state as the key set fetcher sees it.

use super::{Env, JwksCache, View};
use crate::metrics::Metrics;
use crate::runtime::state::State;
use crate::runtime::upstream::Upstreams;

impl Env for State {
    fn jwks(&self) -> &JwksCache {
        &self.jwks
    }

    fn view(&self) -> View {
        let s = self.snapshot();
        View {
            plan: s.plan.clone(),
            creds: s.creds.clone(),
            generation: s.generation,
        }
    }

    fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn pick(&self) -> u64 {
        self.next()
    }
}
