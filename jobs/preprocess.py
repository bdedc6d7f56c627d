"""Entrypoint: ``python jobs/preprocess.py --data s3://.../isic2019 --out s3://.../preprocessed [--size 224]``."""

import sys

from skin_cli.main import main

if __name__ == "__main__":
    raise SystemExit(main(["preprocess", *sys.argv[1:]]))
