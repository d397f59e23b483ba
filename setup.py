"""The one thing pyproject.toml cannot say: with CHARGE_CAPTURE_COMPILE=1 in the environment of
a build (`pip install .`, `pip wheel .`), the decision path is compiled by mypyc into C
extension modules, which Python imports instead of the .py files beside them.

Why: the worker is bound by its Python work per event. Compiled, the modules below cut the
worker's main-thread CPU per event by about 15% and raise `check`'s rate by about 17% (README,
"Benchmarks"). They are typed under `mypy --strict` and handle our own types only: the rules are
pure functions of validated msgspec Structs, the state modules of bytes they wrote themselves.

Off by default: an editable install for development must run the sources as they are edited
(a stale extension module would silently shadow a changed .py). The Docker image turns it on;
tests/test_compiled.py builds the compiled wheel and proves its decisions byte-identical to the
golden files and to the pure-Python ones. Compiled modules need nothing of mypy at run time.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import setup

# The rules (verdicts, rules by rule ID, versions and fingerprints, packs), the processing path,
# the visit state, Avro's varints, the hot path's Avro readers and writers (generated), the
# direct append of output records and the reading of fetched record batches. rules.charge stays
# Python: its msgspec Structs are made by msgspec's metaclass, which mypyc does not compile; so
# does worker.state.changelog (pydantic models).
COMPILED = [
    "rules/codes.py",
    "rules/engine.py",
    "rules/pack.py",
    "rules/rulebook.py",
    "rules/traction.py",
    "rules/visit.py",
    "worker/kafka/batch_append.py",
    "worker/kafka/fast_records.py",
    "worker/processing/batch.py",
    "worker/processing/pipeline.py",
    "worker/serde/avro_built.py",
    "worker/varints.py",
    "worker/state/lines.py",
    "worker/state/store.py",
    "worker/state/visit_format.py",
    "worker/state/visits.py",
]

COMPILE = os.environ.get("CHARGE_CAPTURE_COMPILE", "") == "1"


def ext_modules() -> list[Any]:
    if not COMPILE:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        # An isolated build first runs this file to ask what it needs (`egg_info`), before
        # setup_requires below is installed; any other run without mypyc cannot compile.
        if "egg_info" in sys.argv:
            return []
        raise SystemExit(
            "CHARGE_CAPTURE_COMPILE=1 needs mypyc in the build environment: "
            "pip install 'mypy>=1.10', or build with isolation (the default)"
        ) from None
    return list(mypycify(COMPILED, opt_level="3", group_name="charge_capture_rules"))


setup(
    ext_modules=ext_modules(),
    # What mypyc needs to analyse the modules (the pydantic plugin of [tool.mypy] included),
    # asked of an isolated build only when compiling.
    setup_requires=["mypy>=1.10", "pydantic>=2.6,<3", "msgspec>=0.18"] if COMPILE else [],
)
