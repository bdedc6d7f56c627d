"""Entrypoint: ``python jobs/train_student.py --data PRE --teacher T --partition P --out O --variant layer3+layer4``."""

import sys

from skin_cli.main import main

if __name__ == "__main__":
    raise SystemExit(main(["student", *sys.argv[1:]]))
