"""Entrypoint for ``ray job submit ... -- python jobs/pipeline.py --profile paper --data s3://...``."""

import sys

from skin_cli.main import main

if __name__ == "__main__":
    raise SystemExit(main(["pipeline", *sys.argv[1:]]))
