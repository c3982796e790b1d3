"""What a measurement ran on: machine, versions, git commit. Recorded by benchmarks and reports."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

__all__ = ["machine_description", "package_versions", "git_commit"]


def machine_description(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model()
    return (f"{name}; torch {torch.__version__}; python {platform.python_version()}; "
            f"{torch.get_num_threads()} torch threads; {platform.system()} {platform.machine()}")


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def package_versions(names=("polycom", "torch", "triton", "numpy", "scipy", "tokenizers", "matplotlib",
                            "submitit")) -> dict[str, str | None]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the polycom checkout (with '-dirty' when it has uncommitted changes); None
    for an installed wheel or without git."""
    where = path or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
