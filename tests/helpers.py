"""Test helpers: a throwaway git + DVC repository holding this project's pipeline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "src", ".dvc/config", ".dvcignore", ".gitignore"]


class Exploit:
    """A pickle that would run `touch pwned` when unpickled: weights-only loading must refuse it unrun."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def deep_update(target: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_update(target[key], value)
        else:
            target[key] = value
    return target


@dataclass
class PipelineRepo:
    path: Path
    env: dict = field(default_factory=dict)
    first_repro: subprocess.CompletedProcess | None = None
    import_log: Path | None = None  # what each stage of the first repro loaded (MNIST_XAI_IMPORT_LOG)

    @classmethod
    def create(cls, path: Path, params: dict | None = None, env: dict | None = None) -> PipelineRepo:
        """Copy the project's pipeline files into `path`, commit them, and apply `params` overrides."""
        for name in PROJECT_FILES:
            source, target = ROOT / name, path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                shutil.copy2(source, target)
        inherited = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # embedded store unless given
        repo = cls(path=path, env={**inherited, **(env or {})})
        repo.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{repo.env.get('PATH', '')}"
        if params:
            repo.update_params(params, replace_methods=True)
        repo.git("init", "-q", "-b", "main")
        repo.git("add", "-A")
        repo.git("commit", "-q", "-m", "pipeline under test")
        return repo

    def run(self, *command: str, check: bool = True, timeout: float = 600, env: dict | None = None
            ) -> subprocess.CompletedProcess:
        result = subprocess.run(command, cwd=self.path, env={**self.env, **(env or {})}, capture_output=True,
                                text=True, timeout=timeout)
        return _checked(result) if check else result

    def git(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("git", "-c", "user.email=test@example.com", "-c", "user.name=test", *args)

    def dvc(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "dvc", *args, check=check, **kwargs)

    def stage(self, name: str, *args: str, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
        """Run one stage script directly, as `dvc repro` would."""
        return self.run(sys.executable, f"stages/{name}.py", *args, check=check, **kwargs)

    @property
    def params(self) -> dict:
        return yaml.safe_load((self.path / "params.yaml").read_text())

    def update_params(self, changes: dict, replace_methods: bool = False) -> None:
        """Merge `changes` into params.yaml; with replace_methods, explain.methods is replaced, not merged."""
        params = self.params
        if replace_methods and "methods" in changes.get("explain", {}):
            params["explain"]["methods"] = {}
        (self.path / "params.yaml").write_text(yaml.safe_dump(deep_update(params, changes), sort_keys=False))


def _checked(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if result.returncode != 0:
        command = " ".join(map(str, result.args))
        raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def ran_stages(output: str) -> list[str]:
    """Stage names from DVC's "Running stage 'x':" lines."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]
