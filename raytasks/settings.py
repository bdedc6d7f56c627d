"""Command-line arguments → typed config, shared by the ``skin`` CLI and ``jobs/`` entrypoints."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from skin_core.config import PipelineConfig, load_config, profile_path

# Profiles ship in the repository (jobs/configs); a user's own YAML path works too.
REPO_ROOT = Path(__file__).resolve().parents[1]
PROFILE_DIRS = (REPO_ROOT / "jobs" / "configs", Path.cwd() / "jobs" / "configs")


def add_config_args(parser: argparse.ArgumentParser, default_profile: str = "demo") -> None:
    parser.add_argument("--profile", default=default_profile,
                        help="profile name in jobs/configs (demo, paper, ...) or a YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one field, e.g. --set teacher.epochs=3 (repeatable)")


def config_from_args(args: argparse.Namespace, shortcuts: Sequence[str] = ()) -> PipelineConfig:
    """Profile + shortcut options (``--data`` → data.path, already as KEY=VALUE) + ``--set``."""
    return load_config(profile_path(args.profile, PROFILE_DIRS), [*shortcuts, *args.overrides])
