"""Fixtures of the reliability suite (faults, abuse, load): the service suite's harness, reused as is.

The service suite's conftest (Server, Client, start_server, database_factory, the log-on-failure hooks) is
loaded under another module name and its public names are re-exported here, so pytest registers its fixtures
and hooks for this folder too.

Run:  /usr/bin/python3 -m pytest -q -s -p no:cacheprovider tests/reliability
      PETCAM_TEST_DATABASE=postgres ...          (PostgreSQL)
      PETCAM_RELIABILITY=full ...                (the long version: make test-reliability)
"""

import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "petcam_service_conftest", os.path.join(_HERE, "..", "service", "conftest.py"))
service = importlib.util.module_from_spec(_spec)
sys.modules["petcam_service_conftest"] = service
_spec.loader.exec_module(service)

globals().update({k: v for k, v in vars(service).items() if not k.startswith("__")})

# `short` (the default, inside `make test`) or `full` (`make test-reliability`): iterations and durations.
FULL = os.environ.get("PETCAM_RELIABILITY", "short") == "full"
