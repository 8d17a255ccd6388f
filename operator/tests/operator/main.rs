//! The operator on the test bed's real kube-apiserver and controller-manager, and its Helm chart.

mod chart;
mod leader;
mod node;
mod pod;
mod prometheus;
mod rbac;
mod reconcile;
mod schedule;
mod schema;
mod status;
mod support;
