"""The ``skin`` command line: thin wrappers over ``skin_core`` and ``raytasks``."""
