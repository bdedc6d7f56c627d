"""Entrypoint for ``ray job submit ... -- python jobs/tune.py --profile paper --set tune.num_samples=30``.

Exit codes: 0 done, 1 every trial failed (one line says where their errors are), 2 a refused configuration.
"""

import sys

from skin_cli.main import main

if __name__ == "__main__":
    raise SystemExit(main(["tune", *sys.argv[1:]]))
