# prescore: `make help` lists the targets.
# DATABASE_URL=postgres://... on the command line points demo/run at PostgreSQL.

CARGO ?= cargo
PRESCORE = $(CARGO) run --release --quiet --bin prescore --

.DEFAULT_GOAL := help
.PHONY: help build demo test bench accuracy lint fmt clean

help: ## Show this help
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

build: ## Build the release binary
	$(CARGO) build --release

demo: build ## Generate demo data into prescore.db (or $$DATABASE_URL) and run the demo jobs
	$(PRESCORE) demo
	@echo
	$(PRESCORE) runs --limit 5

test: ## Run every test (unit + integration on SQLite and PostgreSQL)
	$(CARGO) test --release --lib --test tests

bench: ## Benchmark the churn and forecast jobs on PostgreSQL (rows/s per stage, peak memory, COPY floor), the peer and the GBDT fit
	$(CARGO) run --release --bin prescore-bench -- $(BENCH_ARGS)

accuracy: ## Rolling-origin forecast accuracy on real hourly series and the demo data (prints ratios to seasonal naive)
	$(CARGO) run --release --bin prescore-accuracy -- $(ACCURACY_ARGS)

lint: ## rustfmt check, clippy with warnings as errors, cargo deny (licences, bans, sources; advisories when the database is reachable)
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	@if ! command -v cargo-deny >/dev/null; then \
		echo "!!! cargo-deny is not installed: dependency checks SKIPPED (cargo install cargo-deny --locked)"; \
	else \
		$(CARGO) deny --log-level error check bans licenses sources && \
		if $(CARGO) deny fetch >/dev/null 2>&1 || ls $$HOME/.cargo/advisory-dbs/*/ >/dev/null 2>&1; then \
			$(CARGO) deny --log-level error check --disable-fetch advisories; \
		else \
			echo "!!! the RustSec advisory database cannot be fetched here (no network): advisories NOT checked"; \
		fi; \
	fi

fmt: ## Format the code
	$(CARGO) fmt

clean: ## Remove build output and the demo database
	$(CARGO) clean
	rm -f prescore.db prescore.db-shm prescore.db-wal
