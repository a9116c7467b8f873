"""What the tests share besides fixtures (tests/conftest.py holds those): the tiny
experiment's settings, building tasks, small data sets, and the modules that subprocesses
run or import (Luigi task modules, a real luigid, a writer killed midway).

Importable as `support` because pytest puts tests/ on sys.path (it holds conftest.py and no
__init__.py); a subprocess that imports these modules gets tests/ on its PYTHONPATH."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # this checkout
