//! The operator on the test bed's real kube-apiserver and controller-manager.

mod leader;
mod node;
mod pod;
mod rbac;
mod reconcile;
mod schedule;
mod schema;
mod status;
mod support;
