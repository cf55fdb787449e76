# Terraform checks and the local AWS apply (infra slice). See infra/README.md.
#   make tf-check        fmt, init/validate/test (AWS, offline mirror), checkov on all clouds
#   make tf-apply-local  apply the AWS example against moto, run saip ingest on it, re-plan, destroy

CHECKOV_VENV := .venv-checkov
CHECKOV_REQ := infra/requirements-checkov.txt
CHECKOV_STAMP := $(CHECKOV_VENV)/.saip-$(shell sha256sum $(CHECKOV_REQ) 2>/dev/null | cut -c1-16)
TF := infra/scripts/tf.sh
TF_LOCAL_DIR := $(RUN_DIR)/tf-local
TF_EXAMPLE := infra/aws/examples/secure-ingestion

.PHONY: tf-check tf-apply-local checkov-venv

# checkov lives in its own venv: its bc-python-hcl2 clashes with python-hcl2 in .venv.
$(CHECKOV_STAMP): $(CHECKOV_REQ)
	@echo "==> creating $(CHECKOV_VENV) (checkov pins changed or venv missing)"
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -r $(CHECKOV_REQ)
	touch $@

# Make merges prerequisites: `make venv` (and so `make test`) also builds the checkov venv.
venv: $(CHECKOV_STAMP)

checkov-venv: $(CHECKOV_STAMP) ## create/refresh the separate checkov venv

tf-check: venv ## Terraform: fmt -check, AWS init/validate/test (offline mirror), checkov (all clouds, custom policies)
	bash infra/scripts/tf-check.sh

tf-apply-local: venv ## apply the AWS example against moto, run `saip ingest` on it, check a re-plan is empty, destroy
	@bash infra/scripts/apply-local.sh
