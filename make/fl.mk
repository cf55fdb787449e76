# Federated learning on real processes (owner: fl-deploy). Included by the Makefile.
.PHONY: fl-deploy-local

FL_DEPLOY_ARGS ?=

fl-deploy-local: venv ## Flower on 127.0.0.1: CA + TLS SuperLink with SuperNode auth, 3 SuperNodes, flwr run, stop every process group
	@mkdir -p $(RUN_DIR)/fl-deploy
	@rc=0; $(BIN)/python -m saip_fl.deploy --run-dir $(RUN_DIR)/fl-deploy $(FL_DEPLOY_ARGS) || rc=$$?; \
	  latest=$$(ls -1dt $(RUN_DIR)/fl-deploy/run-* 2>/dev/null | head -1); \
	  if [ -n "$$latest" ] && [ -f "$$latest/processes.json" ]; then \
	    groups=$$($(BIN)/python -c 'import json,sys; print(*json.load(open(sys.argv[1]))["process_groups"])' "$$latest/processes.json"); \
	    left=$$(ps -eo pgid=,stat=,pid= | awk -v g=" $$groups " '$$2 !~ /^Z/ && index(g, " " $$1 " ") {print $$3}'); \
	    if [ -n "$$left" ]; then echo "fl-deploy-local: processes left in groups [$$groups]: $$left" >&2; rc=1; \
	    else echo "==> fl-deploy-local: process groups [$$groups] checked: none left"; fi; \
	  fi; \
	  exit $$rc
