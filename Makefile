# `make run`: set everything up and open the viewer on the bundled demo study.
# `make test`: set everything up (test and packaging tools too) and run the whole test suite,
#              offscreen; `make test-fast` skips the slow installer build.
VENV := .venv

.PHONY: setup run test test-fast clean

$(VENV)/.setup-run: pyproject.toml scripts/setup.sh
	./scripts/setup.sh
	touch $@

$(VENV)/.setup-test: pyproject.toml scripts/setup.sh
	./scripts/setup.sh --test
	touch $@ $(VENV)/.setup-run

setup: $(VENV)/.setup-run

run: $(VENV)/.setup-run
	$(VENV)/bin/convnest-viewer

test: $(VENV)/.setup-test
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest -q -ra

test-fast: $(VENV)/.setup-test
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest -q -ra -m "not slow"

clean:
	rm -rf $(VENV) build dist *.egg-info
