//! Smoke tests of the Kubernetes test bed: what q8s's operator and its tests rely on,
//! against the real kube-apiserver and etcd that `e2e/start-testbed.sh` starts.

use std::process::Output;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, Error};
use q8s_testbed::{Testbed, eventually};
use serde_json::{Value, json};

const GROUP: &str = "smoke.q8s.test";
const CRD_NAME: &str = "widgets.smoke.q8s.test";
const MANAGER: &str = "q8s-testbed-smoke";

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn from_json<T: k8s_openapi::serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

/// The Widget CRD: a status subresource, printer columns and a schema with limits.
fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": CRD_NAME },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList" },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "additionalPrinterColumns": [
                    { "name": "Size", "type": "integer", "jsonPath": ".spec.size" },
                    { "name": "Phase", "type": "string", "jsonPath": ".status.phase" },
                ],
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "properties": {
                                "size": { "type": "integer", "minimum": 1, "maximum": 10 },
                                "colour": { "type": "string", "enum": ["red", "green", "blue"] },
                            },
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "phase": { "type": "string" },
                                "ready": { "type": "integer" },
                            },
                        },
                    },
                }},
            }],
        },
    })
}

/// Applies the Widget CRD with server-side apply, waits until it is Established,
/// and returns the API of Widgets in `namespace`.
async fn widgets(bed: &Testbed, namespace: &str) -> Api<DynamicObject> {
    let crds = Api::<CustomResourceDefinition>::all(bed.client());
    let applied = crds
        .patch(
            CRD_NAME,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(widget_crd()),
        )
        .await
        .expect("apply the Widget CRD");
    let managers: Vec<_> = applied
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.operation.as_deref() == Some("Apply"))
        .filter_map(|f| f.manager.as_deref())
        .collect();
    assert!(managers.contains(&MANAGER), "applied by {managers:?}");
    eventually("the Widget CRD is Established", || async {
        let crd = crds.get(CRD_NAME).await.map_err(|e| e.to_string())?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            Ok(())
        } else {
            Err("not Established yet".to_owned())
        }
    })
    .await;
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", "Widget"), "widgets");
    let api = Api::<DynamicObject>::namespaced_with(bed.client(), namespace, &resource);
    // Established is the CRD's word; the first list is the served resource's.
    let all = ListParams::default();
    eventually("Widgets are served", || api.list(&all)).await;
    api
}

#[tokio::test]
async fn readyz_answers_ok_through_kubectl() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let output = bed.kubectl(&["get", "--raw", "/readyz"], None);
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "kubectl get --raw /readyz: {stderr}"
    );
    assert_eq!(stdout.trim(), "ok");
}

#[tokio::test]
async fn the_server_is_the_version_k8s_openapi_is_built_for() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let version = bed.client().apiserver_version().await.expect("/version");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "36"),
        "{version:?}"
    );
    assert!(version.git_version.starts_with("v1.36."), "{version:?}");
}

#[tokio::test]
async fn a_crd_status_subresource_and_printer_columns_work() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let namespace = bed.namespace("crd-status").await;
    let api = widgets(&bed, &namespace).await;

    let widget: DynamicObject = from_json(json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "Widget",
        "metadata": { "name": "w1" },
        "spec": { "size": 3, "colour": "green" },
    }));
    let created = api
        .create(&PostParams::default(), &widget)
        .await
        .expect("create a Widget");
    assert_eq!(created.data["spec"]["size"], 3);
    assert!(created.data.get("status").is_none(), "{:?}", created.data);

    let patched = api
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "phase": "Running", "ready": 2 } })),
        )
        .await
        .expect("patch the status subresource");
    assert_eq!(patched.data["status"]["phase"], "Running");
    assert_eq!(
        patched.data["spec"]["size"], 3,
        "the status patch leaves the spec alone"
    );

    // With a status subresource, the main resource ignores status changes.
    let ignored = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "phase": "Bogus" } })),
        )
        .await
        .expect("patch the main resource");
    assert_eq!(ignored.data["status"]["phase"], "Running");

    let output = bed.kubectl(&["get", "widgets.smoke.q8s.test", "-n", &namespace], None);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "kubectl get widgets: {stderr}");
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines.first().map(Vec::as_slice),
        Some(&["NAME", "SIZE", "PHASE"][..]),
        "{stdout}"
    );
    assert_eq!(
        lines.get(1).map(Vec::as_slice),
        Some(&["w1", "3", "Running"][..]),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_deployment_is_stored_and_read_back() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let namespace = bed.namespace("deployment").await;
    let deployments = Api::<Deployment>::namespaced(bed.client(), &namespace);
    let deployment: Deployment = from_json(json!({
        "metadata": { "name": "workers", "labels": { "app": "q8s" } },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "q8s" } },
            "template": {
                "metadata": { "labels": { "app": "q8s" } },
                "spec": { "containers": [{
                    "name": "worker",
                    "image": "q8s:test",
                    "args": ["cluster", "--workers", "2"],
                    "env": [{ "name": "Q8S_BROKER", "value": "postgres://db/q8s" }],
                }]},
            },
        },
    }));
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create a Deployment");

    let read = deployments
        .get("workers")
        .await
        .expect("read the Deployment back");
    assert_eq!(read.metadata.generation, Some(1));
    let spec = read.spec.expect("a spec");
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.expect("a pod template spec");
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("q8s:test"));
    assert_eq!(
        container.args.as_deref(),
        Some(&["cluster".to_owned(), "--workers".to_owned(), "2".to_owned()][..])
    );
    // The server's defaults are there, as a controller reading it back will see them.
    assert_eq!(pod.restart_policy.as_deref(), Some("Always"));
    let strategy = spec.strategy.expect("a default strategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
}

/// Lists ConfigMaps in `namespace` as `client`: refused (403) first, allowed once a
/// Role and RoleBinding for `subject` grant it.
async fn refused_then_granted(bed: &Testbed, client: Client, namespace: &str, subject: Value) {
    let config_maps = Api::<ConfigMap>::namespaced(client, namespace);
    match config_maps.list(&ListParams::default()).await {
        Err(Error::Api(status)) if status.code == 403 => {
            assert!(status.is_forbidden(), "{status:?}");
        }
        other => panic!("expected 403 Forbidden before any grant, got {other:?}"),
    }

    let role: Role = from_json(json!({
        "metadata": { "name": "config-map-reader" },
        "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"] }],
    }));
    Api::<Role>::namespaced(bed.client(), namespace)
        .create(&PostParams::default(), &role)
        .await
        .expect("create the Role");
    let binding: RoleBinding = from_json(json!({
        "metadata": { "name": "config-map-reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "config-map-reader" },
        "subjects": [subject],
    }));
    Api::<RoleBinding>::namespaced(bed.client(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create the RoleBinding");

    let all = ListParams::default();
    eventually("the grant reaches the authorizer", || {
        config_maps.list(&all)
    })
    .await;
    // The grant is what it says: reading, not writing.
    let config_map: ConfigMap = from_json(json!({ "metadata": { "name": "nope" } }));
    match config_maps
        .create(&PostParams::default(), &config_map)
        .await
    {
        Err(Error::Api(status)) if status.code == 403 => {}
        other => panic!("expected 403 Forbidden for create, got {other:?}"),
    }
}

#[tokio::test]
async fn rbac_refuses_a_service_account_until_a_role_grants_it() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let namespace = bed.namespace("rbac-sa").await;
    let client = bed.service_account_client(&namespace, "reader").await;
    let subject = json!({ "kind": "ServiceAccount", "name": "reader", "namespace": namespace });
    refused_then_granted(&bed, client, &namespace, subject).await;
}

#[tokio::test]
async fn rbac_refuses_a_token_user_until_a_role_grants_it() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let namespace = bed.namespace("rbac-user").await;
    let subject =
        json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": bed.user_name() });
    refused_then_granted(&bed, bed.user_client(), &namespace, subject).await;
}

#[tokio::test]
async fn server_side_dry_run_rejects_an_object_that_breaks_the_crd_schema() {
    let Some(bed) = Testbed::connect().await else {
        return;
    };
    let namespace = bed.namespace("dry-run").await;
    let api = widgets(&bed, &namespace).await;
    let widget = |name: &str, size: u32, colour: &str| {
        format!(
            "apiVersion: {GROUP}/v1\nkind: Widget\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  size: {size}\n  colour: {colour}\n"
        )
    };

    let output = bed.kubectl(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&widget("bad", 50, "purple")),
    );
    let (stdout, stderr) = text(&output);
    assert!(
        !output.status.success(),
        "a Widget of size 50 passed: {stdout}"
    );
    assert!(stderr.contains("spec.size"), "{stderr}");
    assert!(stderr.contains("spec.colour"), "{stderr}");

    let output = bed.kubectl(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&widget("good", 5, "red")),
    );
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "a valid Widget was refused: {stderr}"
    );
    assert!(stdout.contains("(server dry run)"), "{stdout}");

    for name in ["bad", "good"] {
        match api.get(name).await {
            Err(Error::Api(status)) if status.is_not_found() => {}
            other => panic!("a dry run stored {name}: {other:?}"),
        }
    }
}
