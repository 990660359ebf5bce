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

# One thread per process: the tiny models of the tests and the demo run faster single-threaded
# on a small CPU (measured: a demo fold took ~2 min with 1 thread, over 4 min with 2 under load).
# The tests run in two worker processes (pytest-xdist), one per core; tests/conftest.py keeps
# each module, and the modules that share the demo run, on one worker. -rs says why a test was
# skipped: the Slurm tests without a reachable cluster (start one with .ci/slurm-up).
test: $(STAMP)
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -rs -n 2 \
		tests lobes recipes benchmarks

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The demo: synthetic IEMOCAP-layout corpus + tiny random-weight HuBERT, all five folds of
# gmp_tl and baseline. A re-run skips what is done (corpus, model, finished steps).
DEMO_DIR ?= demo_output
DEMO_CORPUS := $(DEMO_DIR)/corpus/IEMOCAP_full_release
DEMO_HUBERT := $(DEMO_DIR)/tiny_hubert

$(DEMO_CORPUS)/demo_truth.json: | $(STAMP)
	$(PY) recipes/IEMOCAP/GMP-TL/make_demo_corpus.py $(DEMO_DIR)/corpus --utts_per_speaker 20

$(DEMO_HUBERT)/config.json: | $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m lobes.fixtures.encoders $(DEMO_HUBERT)

demo: $(STAMP) $(DEMO_CORPUS)/demo_truth.json $(DEMO_HUBERT)/config.json
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) recipes/IEMOCAP/GMP-TL/run_cv.py \
		--data_folder $(DEMO_CORPUS) --output_folder $(DEMO_DIR)/cv \
		--overrides hparams/encoders/tiny.yaml recipes/IEMOCAP/GMP-TL/hparams/demo.yaml \
		--encoder_source $(DEMO_HUBERT) --folds 1,2,3,4,5 --systems gmp_tl,baseline

clean:
	rm -rf $(VENV) *.egg-info
