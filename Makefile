# The two commands a newcomer needs (see README.md):
#   make demo   set everything up, then run the main job on the bundled data_samples/
#   make test   set everything up, then run the whole test suite
# Both create .venv once and reuse it; the install is redone only when settings.ini or
# setup.py change.

VENV   ?= .venv
PYTHON ?= python3
STAMP  := $(VENV)/.ssl3d-installed

.PHONY: demo test test-gpu setup

setup: $(STAMP)

# torch, torchvision and fastai resolve in one pip command, at the versions constraints.txt pins
# (settings.ini gives the ranges a user's own environment may bring).
$(STAMP): settings.ini setup.py constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ssl3d demo --out demo_run --force

test: $(STAMP)
	$(VENV)/bin/python -m pytest tests/ -ra --durations=15

# On a machine with a GPU: the tests marked `cuda` and the notebooks' `#| cuda` cells (skipped everywhere else).
test-gpu: $(STAMP)
	$(VENV)/bin/python -m pytest tests/ -m cuda -ra
	$(VENV)/bin/python -m pytest tests/test_notebooks.py -ra
