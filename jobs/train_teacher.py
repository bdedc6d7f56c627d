"""Entrypoint: ``python jobs/train_teacher.py --profile paper --data PREPROCESSED --out TEACHER [--set ...]``."""

import sys

from skin_cli.main import main

if __name__ == "__main__":
    raise SystemExit(main(["teacher", *sys.argv[1:]]))
