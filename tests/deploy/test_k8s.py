"""The Kubernetes manifests (deploy/k8s), checked offline.

Every overlay, with MinIO and with the SeaweedFS component, is rendered with `kubectl kustomize`
(skipped where kubectl is missing), every rendered resource is validated against the Kubernetes
OpenAPI schema (kubernetes-validate, strict: unknown fields are errors), and the properties
the deployment relies on are asserted: security settings, gRPC probes on the served port,
resources, Secret and ConfigMap references, network policies, endpoints, scaling, and the
catalog database (PostgreSQL: pinned, probed, on a volume, its password and the gateway's
WORKBENCH_DATABASE_URL from a Secret, reachable from the gateway only). The overlays are
rendered once more with components/external-database. yamllint checks the sources.

The checks of the catalog database and of the gateway's replication are functions that return
what is wrong; each is also run on renders with a mistake planted in them, and must name it.
"""

from __future__ import annotations

import base64
import copy
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Callable

import sqlalchemy as sa

import kubernetes_validate
import pytest
from yamllint import linter
from yamllint.config import YamlLintConfig

from services.common.settings import DEFAULT_PORTS, Settings
from tests.deploy.conftest import DEPLOY, K8S, OVERLAYS, REPO, SEAWEEDFS_OFF, VARIANTS

# The oldest Kubernetes the manifests are meant for, and the newest schema the installed
# kubernetes-validate knows: a field removed or not yet there in either fails the check.
K8S_VERSIONS = ["1.29", kubernetes_validate.utils.latest_version()]
WORKLOADS = ("Deployment", "StatefulSet", "Job")
WORKERS = [name for name in DEFAULT_PORTS if name != "gateway"]
# WORKBENCH_* variables the manifests may set that are not Settings fields
EXTRA_WORKBENCH_ENV = {"WORKBENCH_CACHE"}  # services/reference_models.py


# -- helpers --------------------------------------------------------------------------------


def by_kind(resources: list[dict], kind: str) -> dict[str, dict]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def pod_specs(resources: list[dict]):
    """(resource, pod spec) for every workload."""
    for r in resources:
        if r["kind"] in WORKLOADS:
            yield r, r["spec"]["template"]["spec"]


def containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def quantity_cpu(value) -> float:
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def quantity_bytes(value) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, value
    return float(match[1]) * units.get(match[2], 1)


def grpc_port(container: dict) -> int:
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    assert "grpc" in ports, f"{container['name']}: no container port named grpc"
    return ports["grpc"]


def object_store(resources: list[dict]) -> tuple[dict, int]:
    """The object store's StatefulSet and the port its S3 API listens on."""
    stores = [r for r in resources if r["kind"] == "StatefulSet"
              and r["metadata"]["labels"].get("app.kubernetes.io/component") == "object-store"]
    assert len(stores) == 1, [s["metadata"]["name"] for s in stores]
    container = stores[0]["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return stores[0], ports["s3"]


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def traffic_allowed(policies: list[dict], direction: str, pod_labels: dict, peer_labels: dict, port: int) -> bool:
    """Whether a NetworkPolicy lets a pod of the namespace with peer_labels in (ingress) or out
    (egress) of a pod with pod_labels, on port."""
    for policy in policies:
        if direction.capitalize() not in policy["spec"]["policyTypes"]:
            continue
        if not matches(policy["spec"]["podSelector"], pod_labels):
            continue
        for rule in policy["spec"].get(direction, []):
            peers = rule.get("from" if direction == "ingress" else "to")
            peer_ok = peers is None or any(
                "podSelector" in peer and "namespaceSelector" not in peer and matches(peer["podSelector"], peer_labels)
                for peer in peers)
            port_ok = "ports" not in rule or any(p.get("port") == port for p in rule["ports"])
            if peer_ok and port_ok:
                return True
    return False


def workload_labels(resources: list[dict]) -> dict[str, dict]:
    return {r["metadata"]["name"]: r["spec"]["template"]["metadata"]["labels"]
            for r in resources if r["kind"] in WORKLOADS}


def secret_value(resources: list[dict], name: str, key: str) -> str | None:
    secret = by_kind(resources, "Secret").get(name)
    if secret is None:
        return None
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    if key in secret.get("data", {}):
        return base64.b64decode(secret["data"][key]).decode()
    return None


def env_entries(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def schema_errors(resources: list[dict]) -> list[str]:
    errors = []
    for resource in resources:
        name = f"{resource['kind']}/{resource['metadata']['name']}"
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                errors.append(f"{name} (Kubernetes {version}): {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                errors.append(f"{name}: {exc.message}")
    return errors


# -- rendering and schema -------------------------------------------------------------------


def test_every_overlay_is_checked():
    assert {"dev", "prod"} <= set(OVERLAYS)
    assert (K8S / "components" / "seaweedfs" / "kustomization.yaml").is_file()


@pytest.mark.parametrize("variant", VARIANTS)
def test_renders_and_validates_against_the_kubernetes_schema(render, variant):
    resources = render(variant)
    assert resources, f"overlays/{variant} rendered nothing"
    errors = schema_errors(resources)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_namespace_for_everything(render, variant):
    resources = render(variant)
    namespaces = by_kind(resources, "Namespace")
    assert len(namespaces) == 1
    (namespace,) = namespaces
    assert namespaces[namespace]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for r in resources:
        if r["kind"] != "Namespace":
            assert r["metadata"].get("namespace") == namespace, f"{r['kind']}/{r['metadata']['name']}"


# -- security -------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_pod_runs_restricted(render, variant):
    """Non-root, read-only root filesystem, no privilege escalation, no capabilities, RuntimeDefault
    seccomp, no service-account token, nothing from the host: for every container of every workload."""
    problems = []
    for resource, spec in pod_specs(render(variant)):
        where = f"{resource['kind']}/{resource['metadata']['name']}"
        pod = spec.get("securityContext", {})
        if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile is not RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: mounts a service account token")
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                problems.append(f"{where}: {key}")
        for volume in spec.get("volumes", []):
            if "hostPath" in volume:
                problems.append(f"{where}: hostPath volume {volume['name']}")
        for c in containers(spec):
            sc = c.get("securityContext", {})
            at = f"{where} container {c['name']}"
            if not sc.get("runAsNonRoot", pod.get("runAsNonRoot")):
                problems.append(f"{at}: runAsNonRoot is not true")
            if sc.get("runAsUser", pod.get("runAsUser")) in (0, None):
                problems.append(f"{at}: no non-zero runAsUser")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{at}: root filesystem is writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{at}: privilege escalation allowed")
            if sc.get("privileged"):
                problems.append(f"{at}: privileged")
            caps = sc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []) or caps.get("add"):
                problems.append(f"{at}: capabilities not all dropped")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("variant", VARIANTS)
def test_images_are_pinned(render, variant):
    for resource, spec in pod_specs(render(variant)):
        for c in containers(spec):
            image = c["image"]
            name, _, tag = image.rpartition(":")
            assert name and "/" not in tag, f"{resource['metadata']['name']}: {image} has no tag"
            assert tag not in ("latest", "stable", "main"), f"{image} is not pinned"
            assert re.search(r"\d", tag), f"{image}: the tag names no version"


@pytest.mark.parametrize("variant", VARIANTS)
def test_writable_paths_are_emptydir_volumes(render, variant):
    """The services' image expects /tmp, the model cache and HOME to be writable."""
    for name in DEFAULT_PORTS:
        spec = by_kind(render(variant), "Deployment")[name]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        for path in ("/tmp", "/var/cache/workbench", "/home/workbench"):
            assert path in mounts, f"{name}: {path} is not mounted"
            assert "sizeLimit" in volumes[mounts[path]]["emptyDir"], f"{name}: {path} has no size limit"


# -- probes and resources -------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_deployments_probe_grpc_health_on_their_served_port(render, variant):
    deployments = by_kind(render(variant), "Deployment")
    assert set(deployments) == set(DEFAULT_PORTS)
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        port = grpc_port(container)
        assert port == DEFAULT_PORTS[name], f"{name} serves on {port}"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in container, f"{name}: no {probe}"
            grpc = container[probe].get("grpc")
            assert grpc is not None, f"{name}: {probe} is not a native gRPC probe"
            # the GRPCAction takes a number, not a port name: it must be the named port's number
            assert grpc["port"] == port, f"{name}: {probe} probes {grpc['port']}, serves {port}"
            assert grpc.get("service", "") == "", f"{name}: {probe} must check the overall health"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["WORKBENCH_LISTEN"] == f"0.0.0.0:{port}"
        # the command runs a service module that exists
        assert container["command"] == ["python", "-m", f"services.{name}"]
        assert (REPO / "services" / name / "__main__.py").is_file()
        # startup tolerates slow imports (openvino) for longer than liveness would
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
        # the process gets to finish its graceful shutdown before SIGKILL
        grace = float(env.get("WORKBENCH_GRACE_SECONDS") or Settings.grace_seconds)
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_has_requests_and_limits(render, variant):
    for resource, spec in pod_specs(render(variant)):
        for c in containers(spec):
            resources = c.get("resources", {})
            for section in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    assert what in resources.get(section, {}), \
                        f"{resource['metadata']['name']}/{c['name']}: no {section}.{what}"
            assert quantity_cpu(resources["requests"]["cpu"]) <= quantity_cpu(resources["limits"]["cpu"])
            assert quantity_bytes(resources["requests"]["memory"]) <= quantity_bytes(resources["limits"]["memory"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_benchmark_has_whole_cpus_and_guaranteed_resources(render, variant):
    (container,) = by_kind(render(variant), "Deployment")["benchmark"]["spec"]["template"]["spec"]["containers"]
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert requests == limits, "benchmark: requests must equal limits (Guaranteed QoS)"
    cpu = quantity_cpu(limits["cpu"])
    assert cpu >= 1 and cpu == int(cpu), f"benchmark: {limits['cpu']} is not a whole number of CPUs"


def test_prod_sizes_the_workers_for_full_yolov4(render):
    dev, prod = by_kind(render("dev"), "Deployment"), by_kind(render("prod"), "Deployment")
    for name in WORKERS:
        limit = lambda d: quantity_bytes(d[name]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"])  # noqa: E731
        assert limit(prod) > limit(dev), f"{name}: prod is not bigger than dev"


# -- references -----------------------------------------------------------------------------


def _references(spec: dict):
    """(kind, name, key or None) for every Secret and ConfigMap a pod spec uses."""
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            yield "Secret", volume["secret"]["secretName"], None
        if "configMap" in volume:
            yield "ConfigMap", volume["configMap"]["name"], None
        for source in volume.get("projected", {}).get("sources", []):
            for kind, field in (("Secret", "secret"), ("ConfigMap", "configMap")):
                if field in source:
                    for item in source[field].get("items", [{"key": None}]):
                        yield kind, source[field]["name"], item["key"]
    for c in containers(spec):
        for source in c.get("envFrom", []):
            if "secretRef" in source:
                yield "Secret", source["secretRef"]["name"], None
            if "configMapRef" in source:
                yield "ConfigMap", source["configMapRef"]["name"], None
        for env in c.get("env", []):
            ref = env.get("valueFrom", {})
            if "secretKeyRef" in ref:
                yield "Secret", ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
            if "configMapKeyRef" in ref:
                yield "ConfigMap", ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]


def missing_references(resources: list[dict]) -> list[str]:
    available = {kind: {name: {**r.get("data", {}), **r.get("stringData", {})}
                        for name, r in by_kind(resources, kind).items()}
                 for kind in ("Secret", "ConfigMap")}
    missing = []
    for resource, spec in pod_specs(resources):
        for kind, name, key in _references(spec):
            where = f"{resource['kind']}/{resource['metadata']['name']}"
            if name not in available[kind]:
                missing.append(f"{where}: {kind} {name} is not in the render")
            elif key is not None and key not in available[kind][name]:
                missing.append(f"{where}: {kind} {name} has no key {key}")
    return missing


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_secret_and_configmap_reference_resolves(render, variant):
    missing = missing_references(render(variant))
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_service_has_its_own_s3_credentials(render, variant):
    deployments = by_kind(render(variant), "Deployment")
    secrets = set()
    for name, deployment in deployments.items():
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        access = env["WORKBENCH_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
        secret = env["WORKBENCH_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]
        assert access["name"] == secret["name"]
        assert access["name"].startswith(f"s3-{name}"), f"{name} uses {access['name']}"
        secrets.add(access["name"])
        assert "WORKBENCH_INTERNAL_TOKEN" in env
    assert len(secrets) == len(deployments)
    assert "WORKBENCH_AUTH_TOKEN" in {e["name"] for e in
                                      deployments["gateway"]["spec"]["template"]["spec"]["containers"][0]["env"]}


@pytest.mark.parametrize("variant", VARIANTS)
def test_environment_names_are_real_settings(render, variant):
    """A misspelt WORKBENCH_* variable would be silently ignored by Settings.from_env."""
    known = {f"WORKBENCH_{f.name.upper()}" for f in fields(Settings)} | EXTRA_WORKBENCH_ENV
    resources = render(variant)
    names = set()
    for _, spec in pod_specs(resources):
        for c in containers(spec):
            names |= {e["name"] for e in c.get("env", []) if e["name"].startswith("WORKBENCH_")}
    for configmap in by_kind(resources, "ConfigMap").values():
        names |= {k for k in configmap.get("data", {}) if k.startswith("WORKBENCH_")}
    assert names and not names - known, f"unknown settings: {sorted(names - known)}"


# -- services and endpoints -----------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_endpoints_point_at_services_that_exist(render, variant):
    resources = render(variant)
    services = by_kind(resources, "Service")
    (endpoints,) = [c for n, c in by_kind(resources, "ConfigMap").items() if n.startswith("workbench-endpoints")]
    data = endpoints["data"]
    _, s3_port = object_store(resources)
    host, port = data["WORKBENCH_S3_ENDPOINT"].rsplit(":", 1)
    assert host in services and int(port) == s3_port
    assert {p["port"] for p in services[host]["spec"]["ports"]} == {s3_port}
    for worker in WORKERS:
        address = data[f"WORKBENCH_{worker.upper()}_ADDR"]
        match = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", address)
        assert match, f"{worker}: {address} is not a dns:/// address (round_robin needs every pod's IP)"
        service = services[match[1]]
        assert service["spec"].get("clusterIP") == "None", f"{match[1]} is not headless"
        assert int(match[2]) == DEFAULT_PORTS[worker]
        assert service["spec"]["selector"] == {"app.kubernetes.io/name": worker}
    gateway = services["gateway"]
    assert gateway["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert gateway["spec"]["ports"][0]["port"] == DEFAULT_PORTS["gateway"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_services_select_pods_and_name_their_ports(render, variant):
    resources = render(variant)
    templates = [r["spec"]["template"] for r in resources if r["kind"] in ("Deployment", "StatefulSet")]
    for name, service in by_kind(resources, "Service").items():
        selected = [t for t in templates if matches({"matchLabels": service["spec"]["selector"]}, t["metadata"]["labels"])]
        assert selected, f"Service {name} selects no pods"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for template in selected:
                names = {p.get("name") for c in template["spec"]["containers"] for p in c.get("ports", [])}
                assert target in names, f"Service {name}: no container port named {target}"


# -- network policies -----------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_network_policies_deny_by_default_and_allow_only_the_paths_used(render, variant):
    resources = render(variant)
    policies = list(by_kind(resources, "NetworkPolicy").values())
    deny = [p for p in policies if p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, "no default-deny NetworkPolicy"
    dns = [p for p in policies if p["spec"]["podSelector"] == {} and any(
        port.get("port") == 53 for rule in p["spec"].get("egress", []) for port in rule.get("ports", []))]
    assert dns, "no DNS egress"

    def allowed(direction: str, pod_labels: dict, peer_labels: dict, port: int) -> bool:
        return traffic_allowed(policies, direction, pod_labels, peer_labels, port)

    labels = workload_labels(resources)
    store, s3_port = object_store(resources)
    store_labels = labels[store["metadata"]["name"]]
    # clients reach the gateway
    assert allowed("ingress", labels["gateway"], {"any": "client"}, DEFAULT_PORTS["gateway"])
    for worker in WORKERS:
        port = DEFAULT_PORTS[worker]
        assert allowed("egress", labels["gateway"], labels[worker], port), f"gateway -> {worker}"
        assert allowed("ingress", labels[worker], labels["gateway"], port), f"gateway -> {worker}"
        # nobody else reaches a worker, and workers do not reach each other
        assert not allowed("ingress", labels[worker], {"any": "client"}, port), f"anyone -> {worker}"
        for other in WORKERS:
            assert not allowed("egress", labels[other], labels[worker], port), f"{other} -> {worker}"
    for client in [*DEFAULT_PORTS, "s3-setup"]:
        assert allowed("egress", labels[client], store_labels, s3_port), f"{client} -> object store"
        assert allowed("ingress", store_labels, labels[client], s3_port), f"{client} -> object store"
    assert not allowed("ingress", store_labels, {"any": "client"}, s3_port), "anyone -> object store"


# -- scaling --------------------------------------------------------------------------------


def test_base_runs_one_gateway():
    import yaml

    (gateway,) = [d for d in yaml.safe_load_all((K8S / "base" / "services" / "gateway.yaml").read_text())
                  if d and d["kind"] == "Deployment"]
    assert gateway["spec"]["replicas"] == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_gateway_rolls_without_an_outage(render, variant):
    """Gateways share the catalog and take over each other's jobs: a new pod may start beside the
    old one, and must be ready before the old one stops."""
    strategy = by_kind(render(variant), "Deployment")["gateway"]["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert str(strategy["rollingUpdate"]["maxUnavailable"]) in ("0", "0%")


def gateway_replication_problems(resources: list[dict]) -> list[str]:
    """Production: at least two gateways (their autoscaler's minimum, if they have one), spread over
    nodes, and one PodDisruptionBudget that keeps a gateway up and still lets a drain evict one."""
    problems = []
    deployment = by_kind(resources, "Deployment").get("gateway")
    if deployment is None:
        return ["no gateway Deployment"]
    hpa = [h for h in by_kind(resources, "HorizontalPodAutoscaler").values()
           if h["spec"]["scaleTargetRef"].get("kind") == "Deployment" and h["spec"]["scaleTargetRef"]["name"] == "gateway"]
    replicas = hpa[0]["spec"].get("minReplicas", 1) if hpa else deployment["spec"].get("replicas", 1)
    if replicas < 2:
        problems.append(f"gateway: {replicas} replica(s){' at least (HPA)' if hpa else ''}, prod needs 2 or more")
    spec = deployment["spec"]["template"]["spec"]
    if not spec.get("topologySpreadConstraints"):
        problems.append("gateway: replicas not spread over nodes (no topologySpreadConstraints)")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    budgets = [b for b in by_kind(resources, "PodDisruptionBudget").values() if matches(b["spec"]["selector"], labels)]
    if len(budgets) != 1:
        problems.append(f"gateway: {len(budgets)} PodDisruptionBudgets select its pods, needs exactly 1")
    for budget in budgets:
        name = budget["metadata"]["name"]
        if "minAvailable" in budget["spec"]:
            keep = budget["spec"]["minAvailable"]
        elif "maxUnavailable" in budget["spec"]:
            keep = replicas - budget["spec"]["maxUnavailable"] if isinstance(budget["spec"]["maxUnavailable"], int) else None
        else:
            keep = None
        if not isinstance(keep, int):
            problems.append(f"PodDisruptionBudget {name}: give minAvailable or maxUnavailable as a number")
        elif keep < 1:
            problems.append(f"PodDisruptionBudget {name}: lets every gateway be evicted at once")
        elif keep >= replicas:
            problems.append(f"PodDisruptionBudget {name}: keeps {keep} of {replicas} gateways, so a drain can evict none")
    return problems


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.startswith("prod")])
def test_prod_replicates_the_gateway_with_a_disruption_budget(render, variant):
    problems = gateway_replication_problems(render(variant))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.startswith("dev")])
def test_dev_runs_one_replica_each(render, variant):
    resources = render(variant)
    for r in resources:
        if r["kind"] in ("Deployment", "StatefulSet"):
            assert r["spec"]["replicas"] == 1, r["metadata"]["name"]
    assert not by_kind(resources, "HorizontalPodAutoscaler")


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.startswith("prod")])
def test_prod_replicates_autoscales_and_budgets_disruptions(render, variant):
    resources = render(variant)
    deployments = by_kind(resources, "Deployment")
    hpas = by_kind(resources, "HorizontalPodAutoscaler")
    assert set(hpas) == {"quantizer", "accuracy"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpa["spec"]["minReplicas"] >= 2
        # an apply must not reset what the autoscaler chose
        assert "replicas" not in deployments[name]["spec"], f"{name}: replicas set although autoscaled"
    for name in WORKERS:
        replicas = hpas[name]["spec"]["minReplicas"] if name in hpas else deployments[name]["spec"]["replicas"]
        assert replicas >= 2, f"{name}: one replica in prod"
        assert deployments[name]["spec"]["template"]["spec"].get("topologySpreadConstraints"), name
    budgets = by_kind(resources, "PodDisruptionBudget")
    for name in WORKERS:
        covering = [b for b in budgets.values()
                    if matches(b["spec"]["selector"], deployments[name]["spec"]["template"]["metadata"]["labels"])]
        assert len(covering) == 1, f"{name}: {len(covering)} disruption budgets"
        assert covering[0]["spec"].get("minAvailable") == 1


# -- object store ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_object_store_keeps_its_data_on_a_persistent_volume(render, variant):
    resources = render(variant)
    store, _ = object_store(resources)
    name = store["metadata"]["name"]
    assert name == ("seaweedfs" if variant.endswith("+seaweedfs") else "minio")
    assert store["spec"]["replicas"] == 1
    (claim,) = store["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in store["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    # nothing of the other store is left behind
    other = "minio" if name == "seaweedfs" else "seaweedfs"
    assert not [r for r in resources if r["metadata"]["name"].startswith(other)]
    # the setup Job exists and reaches the store
    jobs = by_kind(resources, "Job")
    assert "s3-setup" in jobs
    assert jobs["s3-setup"]["spec"].get("ttlSecondsAfterFinished"), "the Job could never run again"


# -- catalog database -----------------------------------------------------------------------

DATABASE_PORT = 5432


def database(resources: list[dict]) -> dict | None:
    """The in-cluster catalog database's StatefulSet (app.kubernetes.io/component=database)."""
    found = [r for r in resources if r["kind"] == "StatefulSet"
             and r["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "database"]
    return found[0] if len(found) == 1 else None


def database_problems(resources: list[dict]) -> list[str]:
    """One PostgreSQL, its image pinned to an exact release, pg_isready probes, its data on a
    PersistentVolumeClaim, its password from a Secret, writable scratch paths, reachable by name."""
    stores = [r for r in resources if r["kind"] == "StatefulSet"
              and r["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "database"]
    if len(stores) != 1:
        return [f"{len(stores)} StatefulSets labelled app.kubernetes.io/component=database, expected 1"]
    (store,) = stores
    problems = []
    if store["spec"].get("replicas", 1) != 1:
        problems.append("postgres: one server owns the volume, replicas must be 1")
    spec = store["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    # pinned: the official image at an exact major.minor release (a digest too, where given)
    image = container["image"]
    name, _, tag = image.split("@")[0].rpartition(":")
    if name.rsplit("/", 1)[-1] != "postgres" or not re.match(r"\d+\.\d+(-[a-z0-9.]+)?$", tag):
        problems.append(f"postgres: image {image} is not the postgres image pinned to an exact release (16.13-...)")
    # probes: the server accepts connections
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container.get(probe, {}).get("exec", {}).get("command", [])
        if not command or command[0] != "pg_isready":
            problems.append(f"postgres: no {probe} running pg_isready")
    # data on the claim template's volume
    claims = {c["metadata"]["name"]: c for c in store["spec"].get("volumeClaimTemplates", [])}
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    env = env_entries(container)
    pgdata = env.get("PGDATA", {}).get("value", "/var/lib/postgresql/data")
    on_claim = [mounts[n] for n in claims if n in mounts and (pgdata + "/").startswith(mounts[n].rstrip("/") + "/")]
    if not on_claim:
        problems.append(f"postgres: PGDATA ({pgdata}) is not on a volumeClaimTemplates volume (PVC)")
    for claim in claims.values():
        if "storage" not in claim["spec"].get("resources", {}).get("requests", {}):
            problems.append(f"postgres: claim {claim['metadata']['name']} requests no storage")
    # the password from a Secret, and no password-less access
    password = env.get("POSTGRES_PASSWORD", {})
    if "value" in password or "secretKeyRef" not in password.get("valueFrom", {}):
        problems.append("postgres: POSTGRES_PASSWORD does not come from a Secret (secretKeyRef)")
    if env.get("POSTGRES_HOST_AUTH_METHOD", {}).get("value") == "trust":
        problems.append("postgres: POSTGRES_HOST_AUTH_METHOD=trust lets anyone in without a password")
    # the root filesystem is read-only: the socket folder and /tmp must be volumes
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for path in ("/var/run/postgresql", "/tmp"):
        volume = next((volumes.get(n) for n, p in mounts.items() if p == path), None)
        if not volume or "emptyDir" not in volume:
            problems.append(f"postgres: {path} is not an emptyDir volume (the root filesystem is read-only)")
    # reachable: a Service on 5432 selects it, and its governing Service is headless
    labels = store["spec"]["template"]["metadata"]["labels"]
    services = by_kind(resources, "Service")
    serving = [n for n, svc in services.items() if matches({"matchLabels": svc["spec"].get("selector", {})}, labels)
               and svc["spec"].get("selector") and any(p["port"] == DATABASE_PORT for p in svc["spec"]["ports"])]
    if not serving:
        problems.append(f"postgres: no Service on port {DATABASE_PORT} selects it")
    governing = services.get(store["spec"].get("serviceName", ""))
    if governing is None or governing["spec"].get("clusterIP") != "None":
        problems.append(f"postgres: serviceName {store['spec'].get('serviceName')} is not a headless Service")
    return problems


def database_url_problems(resources: list[dict]) -> list[str]:
    """The gateway, and only the gateway, gets WORKBENCH_DATABASE_URL, from a Secret; the URL is a
    PostgreSQL one and, with the in-cluster database, names its Service, user, database and password."""
    problems = []
    deployments = by_kind(resources, "Deployment")
    if "gateway" not in deployments:
        return ["no gateway Deployment"]
    (container,) = deployments["gateway"]["spec"]["template"]["spec"]["containers"]
    entries = [e for e in container.get("env", []) if e["name"] == "WORKBENCH_DATABASE_URL"]
    if len(entries) != 1:
        problems.append(f"gateway: {len(entries)} WORKBENCH_DATABASE_URL entries, expected 1 "
                        "(without it the catalog is SQLite in an emptyDir, lost with the pod)")
    for configmap in by_kind(resources, "ConfigMap").values():
        if "WORKBENCH_DATABASE_URL" in configmap.get("data", {}):
            problems.append(f"ConfigMap {configmap['metadata']['name']} holds WORKBENCH_DATABASE_URL (a password)")
    for resource, spec in pod_specs(resources):
        if resource["metadata"]["name"] != "gateway" and any(
                e["name"] == "WORKBENCH_DATABASE_URL" for c in containers(spec) for e in c.get("env", [])):
            problems.append(f"{resource['kind']}/{resource['metadata']['name']} gets WORKBENCH_DATABASE_URL: "
                            "only the gateway uses the catalog")
    if len(entries) != 1:
        return problems
    (entry,) = entries
    ref = entry.get("valueFrom", {}).get("secretKeyRef")
    if "value" in entry or ref is None:
        return [*problems, "gateway: WORKBENCH_DATABASE_URL is not read from a Secret (secretKeyRef)"]
    text = secret_value(resources, ref["name"], ref["key"])
    if text is None:
        return [*problems, f"gateway: Secret {ref['name']} has no key {ref['key']}"]
    try:
        url = sa.engine.make_url(text)
    except sa.exc.ArgumentError:
        return [*problems, f"Secret {ref['name']}/{ref['key']} is not a database URL"]
    if url.get_backend_name() != "postgresql":
        return [*problems, f"Secret {ref['name']}/{ref['key']}: {url.get_backend_name()}, not PostgreSQL"]
    store = database(resources)
    if store is None:  # an external database: its address is the operator's
        return problems
    (pg,) = store["spec"]["template"]["spec"]["containers"]
    env = env_entries(pg)
    service = by_kind(resources, "Service").get(url.host or "")
    if service is None or not matches({"matchLabels": service["spec"].get("selector", {})},
                                      store["spec"]["template"]["metadata"]["labels"]):
        problems.append(f"database URL: host {url.host} is not a Service of the postgres StatefulSet")
    elif (url.port or DATABASE_PORT) not in {p["port"] for p in service["spec"]["ports"]}:
        problems.append(f"database URL: port {url.port} is not served by Service {url.host}")
    for field_, name in ((url.username, "POSTGRES_USER"), (url.database, "POSTGRES_DB")):
        if field_ != env.get(name, {}).get("value"):
            problems.append(f"database URL: {field_!r} is not the server's {name} {env.get(name, {}).get('value')!r}")
    password_ref = env.get("POSTGRES_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef")
    if password_ref and url.password != secret_value(resources, password_ref["name"], password_ref["key"]):
        problems.append("database URL: its password is not POSTGRES_PASSWORD's")
    return problems


def database_network_problems(resources: list[dict]) -> list[str]:
    """The gateway reaches PostgreSQL on 5432; no other pod, namespace or address may."""
    problems = []
    policies = list(by_kind(resources, "NetworkPolicy").values())
    store = database(resources)
    if store is None:
        return ["no database StatefulSet"]
    db_labels = store["spec"]["template"]["metadata"]["labels"]
    labels = workload_labels(resources)
    if not traffic_allowed(policies, "egress", labels["gateway"], db_labels, DATABASE_PORT):
        problems.append("gateway -> database: egress not allowed")
    if not traffic_allowed(policies, "ingress", db_labels, labels["gateway"], DATABASE_PORT):
        problems.append("gateway -> database: ingress not allowed")
    # every ingress rule that opens the database's port admits gateway pods and nothing else
    for policy in policies:
        if "Ingress" not in policy["spec"]["policyTypes"] or not matches(policy["spec"]["podSelector"], db_labels):
            continue
        name = policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress", []):
            if "ports" in rule and not any(p.get("port") in (DATABASE_PORT, "postgresql") for p in rule["ports"]):
                continue
            peers = rule.get("from")
            if not peers:
                problems.append(f"NetworkPolicy {name}: admits any source to the database")
                continue
            for peer in peers:
                if "podSelector" not in peer or "namespaceSelector" in peer or "ipBlock" in peer:
                    problems.append(f"NetworkPolicy {name}: admits {peer} (other namespaces or addresses)")
                    continue
                if not peer["podSelector"].get("matchLabels"):
                    problems.append(f"NetworkPolicy {name}: admits every pod of the namespace to the database")
                    continue
                others = sorted(w for w, lbls in labels.items() if w != "gateway" and matches(peer["podSelector"], lbls))
                if others:
                    problems.append(f"NetworkPolicy {name}: admits {others} to the database")
    return problems


@pytest.mark.parametrize("variant", VARIANTS)
def test_postgres_is_pinned_probed_persistent_and_secret(render, variant):
    problems = database_problems(render(variant))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gateway_reads_the_database_url_from_a_secret(render, variant):
    problems = database_url_problems(render(variant))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_the_gateway_reaches_the_database(render, variant):
    problems = database_network_problems(render(variant))
    assert not problems, "\n".join(problems)


# -- planted mistakes: each check must name what is wrong -------------------------------------


def find(resources: list[dict], kind: str, name: str) -> dict:
    (found,) = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def postgres_container(resources: list[dict]) -> dict:
    return database(resources)["spec"]["template"]["spec"]["containers"][0]


def gateway_container(resources: list[dict]) -> dict:
    return find(resources, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]


def set_env(container: dict, name: str, entry: dict) -> None:
    container["env"] = [e for e in container.get("env", []) if e["name"] != name] + [{"name": name, **entry}]


def remove(kind: str, name: str) -> Callable[[list[dict]], None]:
    def change(resources: list[dict]) -> None:
        resources.remove(find(resources, kind, name))
    return change


def find_secret(resources: list[dict], prefix: str) -> str:
    """The generated name (with its content hash) of the Secret named prefix."""
    (name,) = [n for n in by_kind(resources, "Secret") if n == prefix or n.startswith(prefix + "-")]
    return name


def set_secret(resources: list[dict], name: str, key: str, value: str) -> None:
    find(resources, "Secret", find_secret(resources, name))["data"][key] = base64.b64encode(value.encode()).decode()


def _both(*changes: Callable[[list[dict]], None]) -> Callable[[list[dict]], None]:
    def change(resources):
        for c in changes:
            c(resources)
    return change


def _no_claims(resources):
    store = database(resources)
    store["spec"].pop("volumeClaimTemplates")
    container = store["spec"]["template"]["spec"]["containers"][0]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "data"]
    store["spec"]["template"]["spec"]["volumes"].append({"name": "data", "emptyDir": {}})
    container["volumeMounts"].append({"name": "data", "mountPath": "/var/lib/postgresql/data"})


def _peer(policy_name: str, peer: dict | None):
    def change(resources):
        rule = find(resources, "NetworkPolicy", policy_name)["spec"]["ingress"][0]
        if peer is None:
            rule.pop("from")
        else:
            rule["from"].append(peer)
    return change


def _configmap_url(resources):
    (endpoints,) = [c for n, c in by_kind(resources, "ConfigMap").items() if n.startswith("workbench-endpoints")]
    endpoints["data"]["WORKBENCH_DATABASE_URL"] = "postgresql://workbench:secret@postgres:5432/workbench"


def _budget(**spec):
    def change(resources):
        find(resources, "PodDisruptionBudget", "gateway")["spec"].update(spec)
    return change


def _gateway_hpa(min_replicas: int):
    def change(resources):
        resources.append({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "gateway"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"},
                     "minReplicas": min_replicas, "maxReplicas": 4}})
    return change


# (check, overlay, mistake planted in its render, words the check's report must contain)
PLANTED = {
    # the PostgreSQL StatefulSet
    "postgres-latest": (database_problems, "dev",
                        lambda r: postgres_container(r).update(image="postgres:latest"), "not the postgres image pinned"),
    "postgres-untagged": (database_problems, "dev",
                          lambda r: postgres_container(r).update(image="postgres"), "not the postgres image pinned"),
    "postgres-major-only": (database_problems, "dev",
                            lambda r: postgres_container(r).update(image="postgres:16-bookworm"),
                            "not the postgres image pinned"),
    "postgres-no-readiness": (database_problems, "dev",
                              lambda r: postgres_container(r).pop("readinessProbe"), "no readinessProbe"),
    "postgres-no-liveness": (database_problems, "dev",
                             lambda r: postgres_container(r).pop("livenessProbe"), "no livenessProbe"),
    "postgres-tcp-probe": (database_problems, "dev",
                           lambda r: postgres_container(r).update(readinessProbe={"tcpSocket": {"port": 5432}}),
                           "no readinessProbe running pg_isready"),
    "postgres-no-pvc": (database_problems, "dev", _no_claims, "not on a volumeClaimTemplates volume"),
    "postgres-pgdata-off-volume": (database_problems, "dev",
                                   lambda r: set_env(postgres_container(r), "PGDATA", {"value": "/srv/pgdata"}),
                                   "not on a volumeClaimTemplates volume"),
    "postgres-literal-password": (database_problems, "dev",
                                  lambda r: set_env(postgres_container(r), "POSTGRES_PASSWORD", {"value": "hunter2"}),
                                  "POSTGRES_PASSWORD does not come from a Secret"),
    "postgres-trust": (database_problems, "dev",
                       lambda r: set_env(postgres_container(r), "POSTGRES_HOST_AUTH_METHOD", {"value": "trust"}),
                       "trust"),
    "postgres-two-replicas": (database_problems, "dev", lambda r: database(r)["spec"].update(replicas=2),
                              "replicas must be 1"),
    "postgres-missing": (database_problems, "dev", remove("StatefulSet", "postgres"), "0 StatefulSets"),
    "postgres-no-service": (database_problems, "dev",
                            _both(remove("Service", "postgres"), remove("Service", "postgres-headless")),
                            "no Service on port 5432"),
    "postgres-governing-not-headless": (database_problems, "prod",
                                        lambda r: find(r, "Service", "postgres-headless")["spec"].pop("clusterIP"),
                                        "not a headless Service"),
    "postgres-tmp-not-writable": (database_problems, "prod",
                                  lambda r: postgres_container(r).update(volumeMounts=[
                                      m for m in postgres_container(r)["volumeMounts"] if m["mountPath"] != "/tmp"]),
                                  "/tmp is not an emptyDir"),
    # only the gateway reaches PostgreSQL
    "network-workers-admitted": (database_network_problems, "dev",
                                 _peer("database-from-gateway",
                                       {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "worker"}}}),
                                 "admits ['accuracy', 'benchmark', 'converter', 'quantizer']"),
    "network-s3-clients-admitted": (database_network_problems, "prod",
                                    _peer("database-from-gateway",
                                          {"podSelector": {"matchLabels": {"workbench/s3-client": "true"}}}),
                                    "s3-setup"),
    "network-every-pod": (database_network_problems, "dev", _peer("database-from-gateway", {"podSelector": {}}),
                          "admits every pod of the namespace"),
    "network-other-namespaces": (database_network_problems, "dev",
                                 _peer("database-from-gateway", {"namespaceSelector": {}}), "other namespaces"),
    "network-any-source": (database_network_problems, "dev", _peer("database-from-gateway", None), "any source"),
    "network-no-ingress": (database_network_problems, "dev", remove("NetworkPolicy", "database-from-gateway"),
                           "ingress not allowed"),
    "network-no-egress": (database_network_problems, "prod", remove("NetworkPolicy", "gateway-to-database"),
                          "egress not allowed"),
    # the gateway's WORKBENCH_DATABASE_URL
    "url-literal": (database_url_problems, "dev",
                    lambda r: set_env(gateway_container(r), "WORKBENCH_DATABASE_URL",
                                      {"value": "postgresql://workbench:secret@postgres:5432/workbench"}),
                    "not read from a Secret"),
    "url-missing": (database_url_problems, "prod",
                    lambda r: gateway_container(r).update(
                        env=[e for e in gateway_container(r)["env"] if e["name"] != "WORKBENCH_DATABASE_URL"]),
                    "0 WORKBENCH_DATABASE_URL entries"),
    "url-in-configmap": (database_url_problems, "dev", _configmap_url, "holds WORKBENCH_DATABASE_URL"),
    "url-to-a-worker": (database_url_problems, "dev",
                        lambda r: set_env(find(r, "Deployment", "converter")["spec"]["template"]["spec"]["containers"][0],
                                          "WORKBENCH_DATABASE_URL", dict(env_entries(gateway_container(r))
                                                                         ["WORKBENCH_DATABASE_URL"])),
                        "Deployment/converter gets WORKBENCH_DATABASE_URL"),
    "url-wrong-host": (database_url_problems, "prod",
                       lambda r: set_secret(r, "catalog-database", "url",
                                            secret_value(r, find_secret(r, "catalog-database"), "url")
                                            .replace("@postgres:", "@minio:")),
                       "not a Service of the postgres StatefulSet"),
    "url-wrong-password": (database_url_problems, "prod",
                           lambda r: set_secret(r, "catalog-database", "password", "not-the-url-one"),
                           "password is not POSTGRES_PASSWORD's"),
    "url-sqlite": (database_url_problems, "dev",
                   lambda r: set_secret(r, "catalog-database", "url", "sqlite:////tmp/catalog.db"), "not PostgreSQL"),
    # prod: replicated gateway with a disruption budget
    "prod-one-gateway": (gateway_replication_problems, "prod",
                         lambda r: find(r, "Deployment", "gateway")["spec"].update(replicas=1), "1 replica(s)"),
    "prod-gateway-hpa-min-1": (gateway_replication_problems, "prod", _gateway_hpa(1), "at least (HPA)"),
    "prod-no-gateway-budget": (gateway_replication_problems, "prod", remove("PodDisruptionBudget", "gateway"),
                               "0 PodDisruptionBudgets"),
    "prod-budget-selects-another": (gateway_replication_problems, "prod",
                                    _budget(selector={"matchLabels": {"app.kubernetes.io/name": "converter"}}),
                                    "0 PodDisruptionBudgets"),
    "prod-budget-blocks-drains": (gateway_replication_problems, "prod", _budget(minAvailable=2), "can evict none"),
    "prod-budget-keeps-none": (gateway_replication_problems, "prod", _budget(minAvailable=0), "every gateway"),
    "prod-gateway-not-spread": (gateway_replication_problems, "prod",
                                lambda r: find(r, "Deployment", "gateway")["spec"]["template"]["spec"]
                                .pop("topologySpreadConstraints"), "not spread"),
}


@pytest.mark.parametrize("mistake", sorted(PLANTED))
def test_checks_catch_planted_mistakes(render, mistake):
    check, overlay, plant, expected = PLANTED[mistake]
    resources = render(overlay)
    assert not check(resources), f"{check.__name__} finds problems in overlays/{overlay} as shipped"
    broken = copy.deepcopy(resources)
    plant(broken)
    problems = check(broken)
    assert any(expected in p for p in problems), f"{check.__name__} missed {mistake}: {problems}"
    assert check(resources) == [], "the planted mistake leaked into the cached render"


# -- an external PostgreSQL -----------------------------------------------------------------

EXTERNAL_DATABASE_ON = "components:\n  - ../../components/external-database\n"


@pytest.fixture(scope="module")
def render_external(k8s_copy, render):
    """render_external(overlay): the overlay with components/external-database, as deploy/README.md
    says to switch it on."""
    def _render(name: str) -> list[dict]:
        variant = k8s_copy / "overlays" / f"{name}+external-database"
        if not variant.exists():
            shutil.copytree(k8s_copy / "overlays" / name, variant)
            kustomization = (variant / "kustomization.yaml").read_text()
            assert "../../components/external-database" in kustomization, \
                f"overlays/{name} does not mention components/external-database"
            (variant / "kustomization.yaml").write_text(kustomization.replace(SEAWEEDFS_OFF, EXTERNAL_DATABASE_ON))
        return render(variant.name)

    return _render


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_external_database_component(render_external, overlay):
    resources = render_external(overlay)
    errors = schema_errors(resources) + missing_references(resources)
    assert not errors, "\n".join(errors)
    # the in-cluster PostgreSQL is gone, all of it
    assert database(resources) is None
    assert not [f"{r['kind']}/{r['metadata']['name']}" for r in resources
                if r["metadata"]["name"].startswith("postgres") or r["metadata"]["name"] == "database-from-gateway"]
    # the gateway still reads the URL from the Secret, and may leave the cluster on 5432 only
    problems = database_url_problems(resources)
    assert not problems, "\n".join(problems)
    egress = find(resources, "NetworkPolicy", "gateway-to-database")["spec"]["egress"]
    assert [p["port"] for rule in egress for p in rule["ports"]] == [DATABASE_PORT]
    assert all("ipBlock" in peer for rule in egress for peer in rule["to"])
    assert matches(find(resources, "NetworkPolicy", "gateway-to-database")["spec"]["podSelector"],
                   workload_labels(resources)["gateway"])
    if overlay == "prod":
        assert not gateway_replication_problems(resources)


# -- sources --------------------------------------------------------------------------------


def test_yaml_sources_pass_yamllint():
    config = YamlLintConfig(file=str(REPO / ".yamllint"))
    sources = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
    assert sources
    problems = []
    for path in sources:
        for problem in linter.run(path.read_text(), config, str(path)):
            problems.append(f"{path.relative_to(REPO)}:{problem.line}:{problem.column}: "
                            f"[{problem.level}] {problem.message} ({problem.rule})")
    assert not problems, "\n".join(problems)


SCRIPTS = sorted([*K8S.rglob("*.sh")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(K8S)))
def test_shell_scripts_parse(script: Path):
    assert script.read_text().startswith("#!/bin/sh\n")
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_object_store_provisioning_knows_every_service(render, variant):
    """The setup Job (and SeaweedFS's identities) create one user per service from the keys
    projected under /keys/<name>/: that must be every Deployment's own Secret, plus root."""
    resources = render(variant)
    expected = {"root", *DEFAULT_PORTS}
    pods = [(r, spec) for r, spec in pod_specs(resources)
            if r["kind"] == "Job" or r["metadata"]["name"] == "seaweedfs"]
    assert pods
    for resource, spec in pods:
        (keys,) = [v for v in spec["volumes"] if v["name"] == "keys"]
        folders = {}
        for source in keys["projected"]["sources"]:
            for item in source["secret"]["items"]:
                folder, key = item["path"].split("/")
                folders.setdefault(folder, set()).add(key)
                assert source["secret"]["name"].startswith(f"s3-{folder}"), item
        assert set(folders) == expected, resource["metadata"]["name"]
        assert all(keys_ == {"access-key", "secret-key"} for keys_ in folders.values())
