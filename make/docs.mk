# Assurance targets (owner: docs). Included by the Makefile.
#   make evidence       run the suite with JUnit output → .run/evidence/controls.{json,html}
#   make supply-chain   CycloneDX SBOMs, dependency audit, secrets scan → .run/supply-chain/
#   make case-studies   re-run every case study and re-embed its output in docs/case_studies/

EVIDENCE_DIR := $(RUN_DIR)/evidence
EVIDENCE_PYTEST_ARGS ?=
SUPPLY_VENV := .venv-supply
SUPPLY_REQ := make/supply-chain-requirements.txt
SUPPLY_STAMP := $(SUPPLY_VENV)/.saip-$(shell sha256sum $(SUPPLY_REQ) 2>/dev/null | cut -c1-16)
AUDIT ?= required
CASE_STUDIES := kinesis-ingestion-poisoning azure-key-vault-rotation-failure fl-client-poisoning

.PHONY: evidence supply-chain supply-chain-venv secrets-baseline case-studies $(addprefix case-,$(CASE_STUDIES))

evidence: venv ## run the suite (stand-ins up) with JUnit output; per control row pass/fail/skip -> .run/evidence/controls.{json,html}
	@mkdir -p $(EVIDENCE_DIR)
	@$(MAKE) --no-print-directory services-up
	@rc=0; SAIP_SERVICES_FILE=$(CURDIR)/$(SERVICES_FILE) $(BIN)/pytest --junitxml=$(EVIDENCE_DIR)/junit.xml $(EVIDENCE_PYTEST_ARGS) || rc=$$?; \
	  $(MAKE) --no-print-directory services-down; \
	  $(BIN)/python docs/tools/evidence.py --junit $(EVIDENCE_DIR)/junit.xml --out $(EVIDENCE_DIR) || rc=1; \
	  exit $$rc

# The audit tools live in their own venv so they do not change the environment they describe.
$(SUPPLY_STAMP): $(SUPPLY_REQ)
	@echo "==> creating $(SUPPLY_VENV) (supply-chain tool pins changed or venv missing)"
	rm -rf $(SUPPLY_VENV)
	$(PYTHON) -m venv $(SUPPLY_VENV)
	$(SUPPLY_VENV)/bin/pip install --quiet --upgrade pip
	$(SUPPLY_VENV)/bin/pip install --quiet -r $(SUPPLY_REQ)
	touch $@

# `make venv` (and so `make test`) builds it too: tests/docs/test_supply_chain.py uses the tools.
venv: $(SUPPLY_STAMP)

supply-chain-venv: $(SUPPLY_STAMP) ## create/refresh .venv-supply (cyclonedx-bom, pip-audit, detect-secrets)

supply-chain: venv $(SUPPLY_STAMP) ## CycloneDX SBOMs (Python, npm), dependency audit (AUDIT=skip if no source is reachable), secrets scan -> .run/supply-chain/
	$(SUPPLY_VENV)/bin/python docs/tools/supply_chain.py --out $(RUN_DIR)/supply-chain --audit $(AUDIT)

secrets-baseline: venv $(SUPPLY_STAMP) ## accept the current secrets-scan findings into .secrets.baseline (review its diff!)
	$(SUPPLY_VENV)/bin/python docs/tools/supply_chain.py --out $(RUN_DIR)/supply-chain --update-baseline

case-studies: venv ## re-run every case study and re-embed its output (deterministic; run after merging code changes)
	$(BIN)/python docs/tools/case_studies.py --write $(CASE_STUDIES)

$(addprefix case-,$(CASE_STUDIES)): case-%: venv ## run one case study and print its output
	$(BIN)/python docs/tools/case_studies.py --print $*
