# hereabouts — one entry point per job. `make help` lists them.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: help test lint unit demo demo-down cluster-up cluster-down cluster-status bench-allocator fuzz

help:
	@echo "make demo            hereabouts end to end on the local control plane (start here)"
	@echo "make demo-down       stop the demo (the control plane keeps running)"
	@echo "make test            everything CI runs: fmt, clippy, unit, integration and e2e tests"
	@echo "                     (brings the local control plane up and down by itself)"
	@echo "make lint            rustfmt check and clippy -D warnings"
	@echo "make unit            the tests that need no API server"
	@echo "make cluster-up      start the local control plane (kubeconfig: .local/kubeconfig)"
	@echo "make cluster-down    stop it and remove its state"
	@echo "make bench-allocator the allocator's criterion benchmark"
	@echo "make fuzz            a short run of each fuzz target (needs nightly and cargo-fuzz)"

test: lint
	e2e/test.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

unit:
	$(CARGO) test --locked --lib --bins

demo:
	e2e/demo.sh

demo-down:
	e2e/demo.sh down

cluster-up:
	e2e/cluster.sh up

cluster-down:
	e2e/cluster.sh down

cluster-status:
	e2e/cluster.sh status

bench-allocator:
	$(CARGO) bench --locked --bench allocator

fuzz:
	cd fuzz && for t in $$($(CARGO) +nightly fuzz list); do \
		$(CARGO) +nightly fuzz run $$t -- -runs=200000 -max_total_time=60 || exit 1; done
