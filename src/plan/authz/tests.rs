//! Decisions as Istio documents them.
