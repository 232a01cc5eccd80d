"""Interpreters for each scheduler: the project venv for asyncron, private venvs for peers.

APScheduler 3.11 and APScheduler 4.0.0a6 both install as ``apscheduler`` and cannot
share an environment, so every peer gets its own virtualenv under
``benchmarks/.venvs/`` (gitignored), created on first use with the stdlib ``venv``
module and ``pip``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ("PEER_REQUIREMENTS", "VENVS_DIR", "ensure_env", "python_for")

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
VENVS_DIR = BENCH_DIR / ".venvs"

#: Pinned requirements of each peer's private environment.
PEER_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "apscheduler3": ("APScheduler==3.11.0",),
    "apscheduler4": ("APScheduler==4.0.0a6",),
    "aiocron": ("aiocron==2.1",),
}


def _venv_python(name: str) -> Path:
    return VENVS_DIR / name / "bin" / "python"


def ensure_env(name: str) -> Path:
    """Return the interpreter for ``name``, creating its virtualenv if it is missing.

    Environments are reused across runs; a stamp file records the requirements they
    were built from, so changing a pin rebuilds the environment.
    """
    if name not in PEER_REQUIREMENTS:
        return Path(sys.executable)
    reqs = PEER_REQUIREMENTS[name]
    env_dir = VENVS_DIR / name
    stamp = env_dir / ".bench-requirements"
    python = _venv_python(name)
    wanted = "\n".join(reqs) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"[bench] creating virtualenv for {name}: {' '.join(reqs)}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(env_dir)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs],
        check=True,
    )
    stamp.write_text(wanted)
    return python


def python_for(scheduler: str) -> Path:
    """Return the interpreter that runs ``scheduler``'s cases (creating peers' venvs)."""
    return ensure_env(scheduler)
