//! The operator on the test bed's real kube-apiserver and controller-manager.

mod pod;
mod reconcile;
mod schema;
mod status;
mod support;
