# `make run`: set everything up and open the viewer on the bundled demo study.
# `make test`: set everything up and run the test suite (offscreen, no display needed).
VENV := .venv
STAMP := $(VENV)/.setup-done

.PHONY: setup run test test-fast clean

$(STAMP): pyproject.toml scripts/setup.sh
	./scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/convnest-viewer

test: setup
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest -q -ra

test-fast: setup
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest -q -ra -m "not slow"

clean:
	rm -rf $(VENV) build dist *.egg-info
