# make search: set up and run the main job; make test: set up and run the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SPACE ?= mlp_regularisation
TRIALS ?= 100

.PHONY: setup search test lint bench bench-beyond screenshots clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

search: setup
	$(BIN)/kmnist-search start --space $(SPACE) --trials $(TRIALS)

# one pytest-xdist worker per core (TEST_WORKERS=0: one process); worksteal hands each worker
# a contiguous share, so a file's module fixtures are mostly built once, and rebalances the tail;
# the 15 slowest tests are listed at the end
TEST_WORKERS ?= auto
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=15

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/train_loop.py && $(BIN)/python benchmarks/loop_overheads.py \
		&& $(BIN)/python benchmarks/search_efficiency.py && $(BIN)/python benchmarks/precision.py

# the beyond spaces end to end: an hour of search per beyond space, then export + retrain (~80 min)
bench-beyond: setup
	$(BIN)/python benchmarks/beyond_spaces.py

# the search defaults' evidence: eleven sampler/pruner arms x 7 seeds on kmnist-7k, then retrains (~85 min, resumable)
.PHONY: bench-arms
bench-arms: setup
	$(BIN)/python benchmarks/search_arms.py

# deployment budgets: budgeted and free searches on kmnist-7k, their fronts, a small CNN retrained (~40 min)
.PHONY: bench-budget
bench-budget: setup
	$(BIN)/python benchmarks/deployment_budget.py

# official KMNIST test accuracy of the model handed over: per space 3 searches (15 min MLP, 45 min
# CNN), the best documented configuration x 3, Optuna's example x 2 per budget, 4-NN, and 5
# mlp_regularisation searches whose single best trial and re-evaluated pick are both retrained;
# each retrained on 7,011 images and tested. Two runs side by side; the script prints its time
# estimate (about 7.5 h on 2 cores). Resumable run by run.
.PHONY: bench-outcome
bench-outcome: setup
	$(BIN)/python benchmarks/official_test.py

# validation against official test accuracy of 30 random cnn_regularisation configurations,
# 10 epochs each, one thread (about 20 min: 35 s each). Resumable configuration by configuration.
.PHONY: bench-transfer
bench-transfer: setup
	$(BIN)/python benchmarks/val_test_transfer.py

# docs/screenshots/*.png: dashboard pages and retrain figures from a real small run (~2 min)
KMNIST_7K ?= /tmp/kmnist-7k
screenshots: setup
	test -d $(KMNIST_7K) || cp -r ../shared/data/kmnist-7k $(KMNIST_7K)
	$(BIN)/python docs/dashboard_screenshot.py --data-dir $(KMNIST_7K)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
