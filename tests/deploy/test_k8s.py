"""The Kubernetes manifests (deploy/k8s), checked offline.

Every overlay, with MinIO and with the SeaweedFS component, is rendered with `kubectl kustomize`
(skipped where kubectl is missing), every rendered resource is validated against the Kubernetes
OpenAPI schema (kubernetes-validate, strict: unknown fields are errors), and the properties
the deployment relies on are asserted: security settings, gRPC probes on the served port,
resources, Secret and ConfigMap references, network policies, endpoints, scaling. yamllint
checks the sources.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import fields
from pathlib import Path

import kubernetes_validate
import pytest
from yamllint import linter
from yamllint.config import YamlLintConfig

from services.common.settings import DEFAULT_PORTS, Settings
from tests.deploy.conftest import DEPLOY, K8S, OVERLAYS, REPO, VARIANTS

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


# -- rendering and schema -------------------------------------------------------------------


def test_every_overlay_is_checked():
    assert {"dev", "prod"} <= set(OVERLAYS)
    assert (K8S / "components" / "seaweedfs" / "kustomization.yaml").is_file()


@pytest.mark.parametrize("variant", VARIANTS)
def test_renders_and_validates_against_the_kubernetes_schema(render, variant):
    resources = render(variant)
    assert resources, f"overlays/{variant} rendered nothing"
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


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_secret_and_configmap_reference_resolves(render, variant):
    resources = render(variant)
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

    labels = {r["metadata"]["name"]: r["spec"]["template"]["metadata"]["labels"]
              for r in resources if r["kind"] in WORKLOADS}
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


@pytest.mark.parametrize("variant", VARIANTS)
def test_single_gateway_that_never_overlaps(render, variant):
    gateway = by_kind(render(variant), "Deployment")["gateway"]
    assert gateway["spec"]["replicas"] == 1
    assert gateway["spec"]["strategy"]["type"] == "Recreate"
    assert "gateway" not in by_kind(render(variant), "HorizontalPodAutoscaler")


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
