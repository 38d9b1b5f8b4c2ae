"""Podman as this sandbox allows it, a local stand-in for python:3.11-slim, and a host-side wheelhouse.

No image registry is reachable, so the base image is built here with debootstrap from the Debian
release the machine runs (its apt mirror is read from the machine's own apt configuration), and the
wheels are downloaded on the host so that the image builds with `--network=none`. Both are cached
under ~/.cache/model-api, keyed by what they are made from.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "model-api"
# Exactly what `FROM python:3.11-slim` resolves to, so the build finds it locally (--pull=never).
BASE_IMAGE = "docker.io/library/python:3.11-slim"
BASE_LABEL = "model-api.base-recipe"
# Bump `revision` when the recipe changes in a way the other fields do not show.
BASE_RECIPE = {"variant": "minbase", "include": ["python3", "python3-venv"], "revision": 1}
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class EngineMissing(RuntimeError):
    """A tool the image tests drive is not installed."""


@dataclass(frozen=True)
class AptSource:
    """Where this machine's apt gets the Debian release it runs."""

    mirror: str
    suite: str
    keyring: str | None


def os_codename() -> str:
    text = Path("/etc/os-release").read_text()
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.MULTILINE)
    if not match:
        raise EngineMissing("/etc/os-release names no VERSION_CODENAME: not a Debian-like machine")
    return match.group(1)


def apt_source(codename: str) -> AptSource:
    """The machine's mirror for `codename`, from deb822 .sources files or a one-line sources.list."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(
                (key.strip(), value.strip())
                for key, _, value in (
                    line.partition(":") for line in stanza.splitlines() if line and line[0] not in "# "
                )
            )
            if "deb" in fields.get("Types", "").split() and codename in fields.get("Suites", "").split():
                return AptSource(fields["URIs"].split()[0], codename, fields.get("Signed-By"))
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == codename:
                return AptSource(words[1], codename, None)
    raise EngineMissing(f"no apt source for {codename} in /etc/apt")


def digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Podman:
    """The podman CLI with the flags this sandbox needs: cgroupfs, file events, and ulimits it can set."""

    exe: str
    global_flags: list[str] = field(
        default_factory=lambda: ["--cgroup-manager=cgroupfs", "--events-backend=file"]
    )

    @classmethod
    def find(cls) -> Podman:
        exe = shutil.which("podman")
        if exe is None:
            raise EngineMissing("podman is not installed: `make system-deps` installs it")
        return cls(exe)

    @property
    def ulimits(self) -> list[str]:
        # Podman asks for limits above the sandbox's own hard limits and runc is refused; so the
        # container gets the host's open-file limit and a process limit runc is allowed to set.
        nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
        return [f"--ulimit=nofile={nofile}:{nofile}", "--ulimit=nproc=4096:4096"]

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120.0, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.exe, *self.global_flags, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def label(self, image: str, name: str) -> str | None:
        result = self("image", "inspect", "--format", f'{{{{index .Labels "{name}"}}}}', image, check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    def inspect(self, kind: str, name: str) -> dict[str, object]:
        data = json.loads(self(kind, "inspect", name).stdout)
        assert isinstance(data, list) and data, f"podman {kind} inspect {name}: {data!r}"
        first = data[0]
        assert isinstance(first, dict)
        return first


def ensure_base_image(podman: Podman) -> str:
    """Make the stand-in `python:3.11-slim` from the machine's Debian release, once per recipe."""
    codename = os_codename()
    recipe = digest(codename, BASE_RECIPE)
    if podman.label(BASE_IMAGE, BASE_LABEL) == recipe:
        return BASE_IMAGE
    tarball = CACHE / f"base-{codename}-{recipe}.tar"
    if not tarball.exists():
        build_rootfs_tarball(apt_source(codename), tarball)
    podman(
        "import",
        "--change",
        f"ENV PATH={PATH}",
        "--change",
        f"LABEL {BASE_LABEL}={recipe}",
        "--change",
        'CMD ["python3"]',
        str(tarball),
        BASE_IMAGE,
        timeout=300,
    )
    return BASE_IMAGE


def build_rootfs_tarball(source: AptSource, tarball: Path) -> None:
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise EngineMissing("debootstrap is not installed: `make system-deps` installs it")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="rootfs-") as tmp:
        root = Path(tmp) / "root"
        keyring = [f"--keyring={source.keyring}"] if source.keyring else []
        subprocess.run(
            [
                debootstrap,
                f"--variant={BASE_RECIPE['variant']}",
                f"--include={','.join(BASE_RECIPE['include'])}",  # type: ignore[arg-type]
                *keyring,
                source.suite,
                str(root),
                source.mirror,
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        # What a slim image leaves out: package caches and indexes, docs and translations.
        for junk in [
            "var/cache/apt",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
            "usr/share/locale",
        ]:
            shutil.rmtree(root / junk, ignore_errors=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True, timeout=300)
        partial.rename(tarball)


def image_python(podman: Podman, image: str) -> str:
    """The image's Python as 'MAJOR.MINOR'."""
    out = podman(
        "run", "--rm", "--network=none", *podman.ulimits, image,
        "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])",
    ).stdout  # fmt: skip
    return out.strip()


def ensure_wheels(requirements: Path, python_version: str) -> Path:
    """Every wheel the image installs (and setuptools to build the project's own), for `python_version`."""
    extra = ["setuptools>=68", "wheel"]
    wheels = CACHE / f"wheels-py{python_version}-{digest(requirements.read_text(), extra)}"
    if (wheels / ".complete").exists():
        return wheels
    shutil.rmtree(wheels, ignore_errors=True)
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--python-version", python_version,
            "--dest", str(wheels), "--requirement", str(requirements), *extra,
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )  # fmt: skip
    (wheels / ".complete").touch()
    return wheels


def build_image(podman: Podman, root: Path, wheels: Path, tag: str) -> None:
    """Build Dockerfile.api hermetically: no network, the wheelhouse mounted, the index off."""
    podman(
        "build",
        "--format=docker",  # OCI images drop HEALTHCHECK
        "--pull=never",
        "--network=none",
        f"--volume={wheels}:/wheels:ro",
        "--build-arg=PIP_NO_INDEX=true",
        *podman.ulimits,
        "--file",
        str(root / "Dockerfile.api"),
        "--tag",
        tag,
        str(root),
        timeout=900,
    )
