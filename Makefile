# The README's two commands: `make demo` (the main job) and `make test` (install + tests).
# Both create the project virtual environment in .venv on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo lint clean

venv: $(STAMP)

# torch and torchaudio are installed first and pinned together (each torchaudio release pins
# one torch release); the rest comes from requirements.txt, then the project itself (editable).
$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q tests lobes

lint: $(STAMP)
	$(VENV)/bin/ruff check .

demo: $(STAMP)
	@echo "make demo: the end-to-end 5-fold demo is not there yet (it comes with the"
	@echo "end-to-end cross-validation issue). Nothing was run."
	@exit 1

clean:
	rm -rf $(VENV) *.egg-info
