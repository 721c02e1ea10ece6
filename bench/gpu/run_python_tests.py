#!/usr/bin/env python3
"""ctest entry for the benchmark harness's Python tests (test_bench_logic.py,
test_fi_extra.py).

Exits 77 (ctest's skip code) with the reason when pytest is not installed, so
a machine without it shows a visible skip instead of a pass.
"""
import os
import sys

try:
    import pytest
except ImportError:
    print("SKIPPED: pytest is not installed (pip install pytest)")
    sys.exit(77)

here = os.path.dirname(os.path.abspath(__file__))
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", os.path.join(here, "test_bench_logic.py"),
                      os.path.join(here, "test_fi_extra.py")]))
