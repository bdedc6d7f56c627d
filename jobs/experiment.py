"""Entrypoint for ``ray job submit ... -- python jobs/experiment.py --profile real --seeds 0,1,2``."""

import sys

from skin_cli.main import main

if __name__ == "__main__":
    raise SystemExit(main(["experiment", *sys.argv[1:]]))
