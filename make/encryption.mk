# Envelope encryption (owner: enc-core). Included by the Makefile.
.PHONY: bench-encryption bench-encryption-quick

bench-encryption: venv ## encryption benchmark vs raw AES-GCM / Tink / AWS ESDK (256 MiB artifact, ~1 min) -> benchmarks/results/encryption.json
	$(BIN)/python benchmarks/encryption.py

bench-encryption-quick: venv ## same, small sizes (< 1 min), written to $(RUN_DIR)/encryption-quick.json
	@mkdir -p $(RUN_DIR)
	$(BIN)/python benchmarks/encryption.py --quick --out $(RUN_DIR)/encryption-quick.json
