"""An example zonelimit plugin package: one trimming policy, one workload (docs/extending.md).

Each module is also usable on its own as a file plugin::

    python -m stress --policy examples/zonelimit-example/zonelimit_example/halve.py:HalvePolicy
    python -m stress --workload examples/zonelimit-example/zonelimit_example/echo.py:Echo
"""

__version__ = "1.0"
