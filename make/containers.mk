# Containers (owner: ctr). Included by the Makefile. See containers/README.md.
#   make images                the base, runtime, SuperLink, SuperNode and ingestion images + SBOMs
#   make fl-deploy-containers  the federation in containers (TLS, node auth, grouped SecAgg+), removed by ID
# Engine: podman (default) or CONTAINER_ENGINE=docker. podman/buildah read $(IMAGES_DIR)/containers.conf.
CONTAINER_ENGINE ?= podman
IMAGES_DIR := $(RUN_DIR)/images
CTR_CONF := $(IMAGES_DIR)/containers.conf
CTR_ENV := CONTAINERS_CONF=$(abspath $(CTR_CONF)) CONTAINER_ENGINE=$(CONTAINER_ENGINE) IMAGES_DIR=$(abspath $(IMAGES_DIR)) PYTHON_BIN=$(abspath $(BIN))/python
FL_CONTAINERS_ARGS ?=

.PHONY: images fl-deploy-containers images-clean

$(CTR_CONF): containers/containers.conf.in
	@mkdir -p $(IMAGES_DIR)
	sed "s/@NOFILE@/$$(ulimit -Hn)/g" $< > $@

images: venv $(CTR_CONF) ## OCI images (base from mmdebstrap, SuperLink, SuperNode, ingestion) + CycloneDX SBOMs -> .run/images/
	$(CTR_ENV) bash containers/build.sh

fl-deploy-containers: images ## the federation in containers: TLS + SuperNode auth, grouped SecAgg+, sealed model; all removed by ID
	@mkdir -p $(RUN_DIR)/fl-containers
	$(CTR_ENV) $(BIN)/python containers/ctr.py --engine $(CONTAINER_ENGINE) deploy --run-dir $(RUN_DIR)/fl-containers $(FL_CONTAINERS_ARGS)

images-clean: $(CTR_CONF) ## remove the saip images (the base too) by ID
	@ids=$$($(CTR_ENV) $(CONTAINER_ENGINE) images --quiet --filter reference='localhost/saip/*' | sort -u); \
	  if [ -n "$$ids" ]; then $(CTR_ENV) $(CONTAINER_ENGINE) rmi --force $$ids; fi
