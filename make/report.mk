# The HTML security report in a real browser (owner: cli). Included by the Makefile.
.PHONY: browser test-browser

browser: ## install Debian's chromium (headless) for the HTML report test; apt-get, needs root
	@if command -v chromium >/dev/null 2>&1; then echo "==> chromium: $$(chromium --version 2>/dev/null)"; \
	  else apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; fi

test-browser: venv browser ## run saip demo, load its HTML report in headless Chromium: no console error, every section drawn; screenshots in .run/report/
	$(BIN)/pytest -m browser tests/pipeline/test_report_browser.py $(PYTEST_ARGS)
